"""The module pipeline a folder defines (modules.json, 1_Pooling, 2_Normalize, prompts),
and the architecture defaults when those files are absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qembed import Embedder
from qembed.errors import UnsupportedModel
from qembed.model.pipeline import load_pipeline


def _folder(src: Path, dst: Path, *, skip: tuple[str, ...] = ()) -> Path:
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_dir() or rel.parts[0] in skip:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).symlink_to(path)
    return dst


def test_tiny_qwen3_pipeline(tiny_model_dir: Path) -> None:
    spec = load_pipeline(tiny_model_dir)
    assert (spec.model_type, spec.pooling, spec.normalize, spec.padding_side) == (
        "qwen3",
        "lasttoken",
        True,
        "left",
    )
    assert spec.hidden_size == 64 and spec.max_tokens == 8192 and spec.supports_mrl and spec.instruction_aware
    assert spec.prompts["query"].startswith("Instruct: ") and spec.prompts["document"] == ""


def test_minilm_pipeline(minilm_dir: Path) -> None:
    spec = load_pipeline(minilm_dir)
    assert (spec.model_type, spec.pooling, spec.normalize, spec.padding_side) == (
        "bert",
        "mean",
        True,
        "right",
    )
    assert spec.max_tokens == 256 and not spec.supports_mrl and not spec.instruction_aware


def test_plain_transformers_qwen3_folder_defaults_to_lasttoken_normalized(
    tiny_model_dir: Path, tmp_path: Path, tiny_embedder: Embedder
) -> None:
    plain = _folder(
        tiny_model_dir,
        tmp_path / "plain",
        skip=("modules.json", "1_Pooling", "config_sentence_transformers.json"),
    )
    spec = load_pipeline(plain)
    assert spec.pooling == "lasttoken" and spec.normalize and spec.prompts == {}
    texts = ["Hello world", "你好"]
    np.testing.assert_allclose(Embedder(str(plain)).encode(texts), tiny_embedder.encode(texts), atol=1e-6)


def test_plain_bert_folder_defaults_to_mean(minilm_dir: Path, tmp_path: Path) -> None:
    plain = _folder(
        minilm_dir, tmp_path / "plain-bert", skip=("modules.json", "1_Pooling", "sentence_bert_config.json")
    )
    spec = load_pipeline(plain)
    assert spec.pooling == "mean" and not spec.normalize and spec.max_tokens == 512


def _with_pooling(minilm_dir: Path, dst: Path, pooling: dict) -> Path:
    folder = _folder(minilm_dir, dst, skip=("1_Pooling",))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 384, **pooling})
    )
    return folder


def test_cls_pooling_matches_sentence_transformers(minilm_dir: Path, tmp_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    folder = _with_pooling(minilm_dir, tmp_path / "cls", {"pooling_mode_cls_token": True})
    assert load_pipeline(folder).pooling == "cls"
    texts = ["Hello world", "a", "CLS pooling takes the first token's state of the sequence."]
    ours = Embedder(str(folder)).encode(texts)
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(texts)
    cos = (ours * ref).sum(1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999


def test_new_style_pooling_mode_key(minilm_dir: Path, tmp_path: Path) -> None:
    folder = _with_pooling(minilm_dir, tmp_path / "new", {"pooling_mode": "cls", "include_prompt": False})
    spec = load_pipeline(folder)
    assert spec.pooling == "cls" and not spec.include_prompt


@pytest.mark.parametrize(
    "pooling",
    [
        {"pooling_mode_max_tokens": True},
        {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True},
        {},
    ],
)
def test_unsupported_pooling_is_refused(minilm_dir: Path, tmp_path: Path, pooling: dict) -> None:
    folder = _with_pooling(minilm_dir, tmp_path / "bad", pooling)
    with pytest.raises(UnsupportedModel, match="pooling"):
        load_pipeline(folder)


def test_unknown_module_is_refused(minilm_dir: Path, tmp_path: Path) -> None:
    folder = _folder(minilm_dir, tmp_path / "dense", skip=("modules.json",))
    modules = json.loads((minilm_dir / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModel, match="Dense"):
        load_pipeline(folder)


def test_damaged_json_is_a_model_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _folder(tiny_model_dir, tmp_path / "damaged", skip=("config_sentence_transformers.json",))
    (folder / "config_sentence_transformers.json").write_text("{broken")
    with pytest.raises(UnsupportedModel, match="not valid JSON"):
        Embedder(str(folder))


def test_max_tokens_setting_overrides_the_model(tiny_model_dir: Path) -> None:
    assert Embedder(str(tiny_model_dir), max_tokens=128).info.max_tokens == 128
