"""Kind detection: what is a reranker, and the clear error for what is not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qembed.errors import InputError, UnsupportedModel
from qembed.rerank.loading import detect_kind, hub_id


def _folder(root: Path, name: str, config: dict, modules: list | None = None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if modules is not None:
        (folder / "modules.json").write_text(json.dumps(modules))
    return folder


QWEN3_CAUSAL = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}
POOLING = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]


def test_kinds_detected(tmp_path: Path) -> None:
    qwen = _folder(tmp_path, "Qwen3-Reranker-0.6B", QWEN3_CAUSAL)
    assert detect_kind(qwen, "Qwen/Qwen3-Reranker-0.6B") == "qwen3-reranker"
    named_by_id = _folder(tmp_path, "snapshot-abc", QWEN3_CAUSAL)
    assert detect_kind(named_by_id, "Qwen/Qwen3-Reranker-4B") == "qwen3-reranker"
    ce = _folder(
        tmp_path, "ce", {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}}
    )
    assert detect_kind(ce, "cross-encoder/ms-marco-MiniLM-L6-v2") == "cross-encoder"
    xlmr = _folder(
        tmp_path, "bge", {"architectures": ["XLMRobertaForSequenceClassification"], "num_labels": 1}
    )
    assert detect_kind(xlmr, "BAAI/bge-reranker-base") == "cross-encoder"


@pytest.mark.parametrize(
    ("name", "config", "modules", "kind", "message"),
    [
        ("Qwen3-Embedding-0.6B", QWEN3_CAUSAL, POOLING, None, "is an embedding model .*Pooling"),
        ("Qwen3-Embedding-0.6B", QWEN3_CAUSAL, POOLING, "qwen3-reranker", "is an embedding model"),
        ("Qwen3-0.6B", QWEN3_CAUSAL, None, None, "without 'reranker' in its name.*kind='qwen3-reranker'"),
        (
            "m",
            {"architectures": ["Qwen3Model"], "model_type": "qwen3"},
            None,
            None,
            "not a reranker .*Qwen3Model",
        ),
        ("m", {"architectures": ["BertModel"]}, None, None, "not a reranker"),
        ("nli", {"architectures": ["BertForSequenceClassification"]}, None, None, "2 labels.*not a reranker"),
        (
            "nli3",
            {
                "architectures": ["DebertaV2ForSequenceClassification"],
                "id2label": {"0": "a", "1": "b", "2": "c"},
            },
            None,
            None,
            "3 labels",
        ),
        (
            "llama-reranker",
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
            None,
            None,
            "only causal-LM",
        ),
        ("Qwen3-Reranker", QWEN3_CAUSAL, None, "cross-encoder", "not a cross-encoder"),
        ("Qwen3-Reranker", QWEN3_CAUSAL, None, "bogus", "not a reranker kind"),
    ],
)
def test_not_a_reranker_is_a_clear_error(tmp_path: Path, name, config, modules, kind, message) -> None:
    folder = _folder(tmp_path, name, config, modules)
    with pytest.raises(UnsupportedModel, match=message):
        detect_kind(folder, name, kind)


def test_kind_override_accepts_an_unnamed_qwen3_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "my-finetune", QWEN3_CAUSAL)
    assert detect_kind(folder, "my-finetune", "qwen3-reranker") == "qwen3-reranker"


def test_aliases() -> None:
    assert hub_id("qwen3-reranker-0.6b") == "Qwen/Qwen3-Reranker-0.6B"
    assert hub_id(" Org/Thing ") == "Org/Thing"


@pytest.mark.integration
def test_embedding_model_passed_as_reranker(tiny_model_dir: Path) -> None:
    from qembed import Reranker

    with pytest.raises(UnsupportedModel, match="is an embedding model"):
        Reranker(tiny_model_dir, device="cpu")


@pytest.mark.integration
def test_unnamed_folder_loads_with_kind(reranker_dir: Path, tmp_path: Path, tiny_reranker) -> None:
    from qembed import Reranker

    copy = shutil.copytree(reranker_dir, tmp_path / "qwen3-tiny-finetune")
    with pytest.raises(UnsupportedModel, match="kind='qwen3-reranker'"):
        Reranker(copy, device="cpu")
    rr = Reranker(copy, device="cpu", dtype="float32", kind="qwen3-reranker")
    pairs = [("q", "a document"), ("q", "another one")]
    assert rr.score(pairs, raw=True).tolist() == pytest.approx(
        tiny_reranker.score(pairs, raw=True).tolist(), abs=1e-6
    )


def test_settings_errors_before_loading(tmp_path: Path) -> None:
    from qembed import Reranker

    with pytest.raises(InputError, match="No reranker named"):
        Reranker()
    with pytest.raises(UnsupportedModel, match="torch backend only"):
        Reranker(tmp_path, backend="onnx")
    with pytest.raises(InputError, match="rerank_max_lenght"):
        Reranker(tmp_path, rerank_max_lenght=10)


def test_make_model_kinds_from_the_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from qembed.cli.main import cli

    out = tmp_path / "ce"
    made = CliRunner().invoke(cli(), ["dev", "make-model", "--kind", "cross-encoder", "--out", str(out)])
    assert made.exit_code == 0, made.output
    assert detect_kind(out, "ce") == "cross-encoder"
    bad = CliRunner().invoke(
        cli(), ["dev", "make-model", "--kind", "cross-encoder", "--shape", "qwen3-0.6b", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "unknown cross-encoder shape" in bad.output
