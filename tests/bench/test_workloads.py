"""Workloads: real text cut to exact token lengths, checked with an independent count."""

from __future__ import annotations

from pathlib import Path

import pytest

from qembed.bench.workloads import PRESETS, WorkloadBuilder, parse_workload


@pytest.fixture(scope="module")
def builder(tiny_model_dir: Path) -> WorkloadBuilder:
    return WorkloadBuilder(tiny_model_dir)


@pytest.mark.parametrize("name", ["query", "passage", "document", "long"])
def test_every_text_has_exactly_the_target_tokens(builder: WorkloadBuilder, tiny_embedder, name: str) -> None:
    spec = parse_workload(name, count=1 if name == "long" else 9)
    workload = builder.build(spec)
    assert len(workload.texts) == spec.count
    # Independent count: the ids the engine itself will feed the model.
    lengths = [len(ids) for ids in tiny_embedder.tokenize(workload.texts)]
    assert lengths == [PRESETS[name].tokens] * spec.count
    assert workload.token_counts == lengths
    assert workload.tokens_sent == spec.count * PRESETS[name].tokens


def test_english_chinese_and_code_are_mixed_and_distinct(builder: WorkloadBuilder) -> None:
    workload = builder.build(parse_workload("passage:12"))
    assert workload.language_mix() == {"en": 4, "zh": 4, "code": 4}
    assert workload.languages[:3] == ["en", "zh", "code"]  # interleaved: every batch mixes scripts
    assert len(set(workload.texts)) == 12
    zh = [t for t, lang in zip(workload.texts, workload.languages, strict=True) if lang == "zh"]
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in zh)
    code = [t for t, lang in zip(workload.texts, workload.languages, strict=True) if lang == "code"]
    assert any(("def " in t or "return" in t or "self" in t or "=" in t) for t in code)


def test_variants_draw_other_texts_of_the_same_lengths(builder: WorkloadBuilder) -> None:
    a = builder.build(parse_workload("passage:30"), variant=0)
    b = builder.build(parse_workload("passage:30"), variant=1)
    again = builder.build(parse_workload("passage:30"), variant=0)
    assert a.texts == again.texts  # reproducible
    assert a.token_counts == b.token_counts
    assert len(set(a.texts) & set(b.texts)) <= 2  # an embedding cache cannot help a later round


def test_the_long_document_mixes_all_sources(builder: WorkloadBuilder) -> None:
    (text,) = builder.build(PRESETS["long"]).texts
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert any(w in text for w in (" the ", " and "))
    assert "def " in text or "return" in text


def test_a_users_text_file_joins_the_corpus(tiny_model_dir: Path, tmp_path: Path) -> None:
    from qembed.bench.workloads import default_sources

    mine = tmp_path / "mine.txt"
    mine.write_text("Zebras graze on the savanna while the herd keeps watch for lions. " * 40)
    builder = WorkloadBuilder(tiny_model_dir, default_sources([mine]))
    workload = builder.build(parse_workload("query:8"))
    assert workload.language_mix() == {"en": 2, "zh": 2, "code": 2, "file": 2}
    assert set(workload.token_counts) == {16}
    assert all(
        "zebra" in t.lower() or "savanna" in t or "lions" in t or "herd" in t
        for t, lang in zip(workload.texts, workload.languages, strict=True)
        if lang == "file"
    )


def test_exact_lengths_with_a_wordpiece_tokenizer(minilm_dir: Path, minilm_embedder) -> None:
    workload = WorkloadBuilder(minilm_dir).build(parse_workload("passage:6"))
    assert [len(ids) for ids in minilm_embedder.tokenize(workload.texts)] == [128] * 6


def test_parse_workload_forms_and_errors() -> None:
    assert parse_workload("passage").count == 256
    assert parse_workload("passage:10").count == 10
    spec = parse_workload("document:3x300")
    assert (spec.count, spec.tokens) == (3, 300)
    with pytest.raises(ValueError, match="unknown workload"):
        parse_workload("paragraph")
    with pytest.raises(ValueError, match=">= 1"):
        parse_workload("query:0")
