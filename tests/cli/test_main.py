"""The `qembed` command line: dev make-model, info, embed (in-process via click's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qembed import Embedder


def _invoke(*args: str, input: str | None = None):
    from qembed.cli.main import cli

    return CliRunner().invoke(cli(), list(args), input=input)


def test_dev_make_model_writes_a_loadable_folder(tmp_path: Path, tiny_embedder: Embedder) -> None:
    out = tmp_path / "made"
    result = _invoke("dev", "make-model", "--out", str(out), "--seed", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "modules.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
    ):
        assert (out / name).is_file(), name
    embedder = Embedder(str(out))
    texts = ["Hello world", "你好"]
    np.testing.assert_allclose(
        embedder.encode(texts), tiny_embedder.encode(texts), atol=1e-6
    )  # same seed, same model


@pytest.mark.integration
def test_dev_make_model_old_tokenizer(tmp_path: Path) -> None:
    out = tmp_path / "old"
    result = _invoke("dev", "make-model", "--out", str(out), "--old-tokenizer", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert not (out / "tokenizer.json").exists()
    assert Embedder(str(out)).tokenize("Hello world") == [[9707, 1879, 151643]]


def test_info_prints_the_models_facts(tiny_model_dir: Path) -> None:
    result = _invoke("info", "--model", str(tiny_model_dir), "--max-tokens", "64")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["dimension"] == 64 and info["max_tokens"] == 64 and info["pooling"] == "lasttoken"
    assert info["model"] == tiny_model_dir.name and info["fallback_reason"] is None
    # one schema with GET /info (the same names for the same facts), plus the local folder
    from qembed.server.schemas import Info

    assert set(info) == set(Info.model_fields) | {"path"}
    assert info["supports_matryoshka"] is True and info["limits"]["max_request_tokens"] == 1_048_576


def test_embed_prints_one_json_line_per_text(tiny_model_dir: Path, tiny_embedder: Embedder) -> None:
    result = _invoke("embed", "--model", str(tiny_model_dir), "Hello world", "你好")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["Hello world", "你好"]
    vectors = np.array([line["embedding"] for line in lines])
    np.testing.assert_allclose(vectors, tiny_embedder.encode(["Hello world", "你好"]), atol=1e-6)


def test_embed_reads_stdin_and_takes_options(tiny_model_dir: Path, tiny_embedder: Embedder) -> None:
    result = _invoke(
        "embed",
        "--model",
        str(tiny_model_dir),
        "--prompt-name",
        "query",
        "--dimensions",
        "32",
        input="Hello world\n\nsecond line\n",
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["Hello world", "second line"]
    assert all(len(line["embedding"]) == 32 for line in lines)
    expected = tiny_embedder.encode(["Hello world", "second line"], prompt_name="query", dimensions=32)
    np.testing.assert_allclose(np.array([line["embedding"] for line in lines]), expected, atol=1e-6)


def test_embed_input_error_is_one_line_exit_2(tiny_model_dir: Path) -> None:
    result = _invoke("embed", "--model", str(tiny_model_dir), "--dimensions", "7", "Hello")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "dimensions" in lines[0]
    result = _invoke("embed", "--model", str(tiny_model_dir), "--task", "nope", "Hello")
    assert result.exit_code == 2 and "task" in result.stderr


def test_help_lists_the_engine_commands() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("download", "dev", "info", "embed"):
        assert command in result.stdout
