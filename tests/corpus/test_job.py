"""The one-machine corpus job on the tiny model: encode's vectors, resume, duplicates, identity."""

from __future__ import annotations

import pytest

from qembed.corpus import CorpusInput, CorpusOptions, CorpusOutput, read_output, run_local
from qembed.errors import InputError
from tests.corpus.conftest import min_cosine, write_jsonl, write_parquet


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory, tiny_embedder, corpus_docs):
    folder = tmp_path_factory.mktemp("corpus")
    source = CorpusInput.of(write_jsonl(folder / "docs.jsonl", corpus_docs))
    seen = []
    report = run_local(
        tiny_embedder,
        source,
        CorpusOutput(folder / "out"),
        batch_tokens=300,
        commit_every=100,
        progress=seen.append,
    )
    return folder, report, seen


def test_vectors_are_encodes_and_every_id_is_there_once(
    jsonl_run, corpus_docs, corpus_reference, tiny_embedder
):
    folder, report, _ = jsonl_run
    ids, vectors, tokens = read_output(folder / "out")
    assert sorted(ids) == sorted(d["id"] for d in corpus_docs)
    assert len(ids) == len(set(ids))
    assert vectors.dtype.name == "float32" and vectors.shape == (240, tiny_embedder.dimension)
    assert min_cosine(vectors, [corpus_reference[i] for i in ids]) >= 0.99999
    texts = {d["id"]: d["text"] for d in corpus_docs}
    expected = tiny_embedder.tokenize([texts[i] for i in ids], task="retrieval", input_type="document")
    assert tokens == [len(t) for t in expected]
    assert (report.embedded, report.already_done, report.duplicates, report.tokens) == (
        240,
        0,
        0,
        sum(tokens),
    )
    assert [p.name for p in CorpusOutput(folder / "out").parts()] == [
        f"part-00000{i}.parquet" for i in range(3)
    ]


def test_progress_counts_documents_and_tokens_up_to_the_total(jsonl_run):
    _, report, seen = jsonl_run
    assert seen[-1].total == 240 and seen[-1].done == 240 and seen[-1].committed == 240
    assert seen[-1].tokens == report.tokens and seen[-1].parts == 3
    assert all(a.done <= b.done and a.tokens <= b.tokens for a, b in zip(seen, seen[1:], strict=False))
    assert len(seen) > 3  # a step per token budget, not one at the end


def test_the_identity_says_what_made_the_vectors(jsonl_run, tiny_embedder):
    folder, _, _ = jsonl_run
    identity = CorpusOutput(folder / "out").identity()
    assert identity is not None
    assert identity.vectors.model_id == tiny_embedder.info.model_id
    assert identity.vectors.dimension == tiny_embedder.dimension
    assert identity.vectors.dtype == "float32" and identity.vectors.backend == "torch"
    assert len(identity.vectors.revision) == 64
    assert (identity.input_type, identity.long_text) == ("document", "chunk")
    assert identity.prompt == identity.vectors.document_prompt


def test_a_second_run_embeds_nothing(jsonl_run, tiny_embedder):
    folder, _, _ = jsonl_run
    report = run_local(tiny_embedder, CorpusInput.of(folder / "docs.jsonl"), CorpusOutput(folder / "out"))
    assert (report.embedded, report.already_done, report.parts_written, report.rows_in_output) == (
        0,
        240,
        0,
        240,
    )


def test_parquet_input_gives_the_same_rows(tmp_path, tiny_embedder, corpus_docs, corpus_reference):
    docs = corpus_docs[:60]
    source = CorpusInput.of(write_parquet(tmp_path / "in" / "docs.parquet", docs))
    run_local(tiny_embedder, source, CorpusOutput(tmp_path / "out"), commit_every=25)
    ids, vectors, _ = read_output(tmp_path / "out")
    assert ids == [d["id"] for d in docs]  # one machine keeps the input order
    assert min_cosine(vectors, [corpus_reference[i] for i in ids]) >= 0.99999


def test_an_interrupted_run_resumes_without_duplicates(
    tmp_path, tiny_embedder, corpus_docs, corpus_reference
):
    docs = corpus_docs[:120]
    source = CorpusInput.of(write_jsonl(tmp_path / "docs.jsonl", docs))
    out = CorpusOutput(tmp_path / "out")

    def stop_after_first_part(p):
        if p.parts >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(
            tiny_embedder, source, out, batch_tokens=150, commit_every=30, progress=stop_after_first_part
        )
    first = out.done_ids()
    assert 30 <= len(first) < 120
    report = run_local(tiny_embedder, source, out, batch_tokens=150, commit_every=30)
    assert report.already_done == len(first) and report.embedded == 120 - len(first)
    ids, vectors, _ = read_output(out.folder)
    assert sorted(ids) == sorted(d["id"] for d in docs)
    assert min_cosine(vectors, [corpus_reference[i] for i in ids]) >= 0.99999


def test_duplicate_ids_first_record_wins(tmp_path, tiny_embedder):
    docs = [{"id": "a", "text": "first text"}, {"id": "b", "text": "bee"}, {"id": "a", "text": "second text"}]
    source = CorpusInput.of(write_jsonl(tmp_path / "docs.jsonl", docs))
    report = run_local(tiny_embedder, source, CorpusOutput(tmp_path / "out"))
    assert (report.embedded, report.duplicates, report.duplicate_examples) == (2, 1, ["a"])
    assert "1 duplicate ids skipped (first record wins)" in report.summary()
    ids, vectors, _ = read_output(tmp_path / "out")
    assert ids == ["a", "b"]
    first = tiny_embedder.encode(["first text"], task="retrieval", input_type="document")
    assert min_cosine(vectors[:1], first) >= 0.99999


def test_another_model_on_an_existing_output_is_an_error_naming_both(tmp_path, tiny_embedder, tiny_model_dir):
    import os
    import shutil

    from qembed import Embedder

    source = CorpusInput.of(
        write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}])
    )
    out = CorpusOutput(tmp_path / "out")
    run_local(tiny_embedder, source, out)
    # another checkpoint: the same files with other weights (a newer mtime stands for them: a new revision)
    folder = shutil.copytree(tiny_model_dir, tmp_path / "other-tiny")
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    other = Embedder(str(folder), device="cpu")
    with pytest.raises(InputError) as err:
        run_local(other, source, out)
    message = err.value.message
    mine = CorpusOutput(out.folder).identity()
    assert mine is not None
    assert mine.vectors.label() in message and "other-tiny" in message and "revision:" in message
    assert "--overwrite" in message
    with pytest.raises(InputError, match="prompt: '' recorded, 'passage: ' now"):
        run_local(tiny_embedder, source, out, CorpusOptions(prompt="passage: "))
    report = run_local(other, source, out, overwrite=True)
    assert report.embedded == 2 and report.already_done == 0
    identity = CorpusOutput(out.folder).identity()
    assert identity is not None and identity.vectors.revision != mine.vectors.revision
