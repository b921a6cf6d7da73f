"""Where models come from: aliases, local paths, the hub cache, offline, ModelScope, and the
default model's fallback to minilm. Every hub here is the fake one on 127.0.0.1 or a closed
port: no test touches the network."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from qembed import Embedder
from qembed.errors import IncompleteModelFolder, ModelNotAvailable
from qembed.model.sources import ALIASES, MINILM_ID, download, hub_id, resolve_model
from qembed.settings import DEFAULT_MODEL
from tests.model.hub_server import HubServer, closed_port_url, use_hub

FAST = 20.0  # seconds: "fails at once" (a refused connection, no retries worth the name)


@pytest.fixture
def no_modelscope(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import modelscope` fail whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "modelscope", None)


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    url = closed_port_url()
    use_hub(monkeypatch, endpoint=url, home=tmp_path / "hf-home")
    monkeypatch.delenv("QEMBED_MODEL", raising=False)
    return url


def _fake_modelscope(folder: Path, calls: list[dict]) -> types.ModuleType:
    module = types.ModuleType("modelscope")

    def snapshot_download(model_id: str, revision: str | None = None, local_dir: str | None = None, **kwargs: object) -> str:
        calls.append({"model_id": model_id, "revision": revision, "local_dir": local_dir})
        if local_dir:
            shutil.copytree(folder, local_dir, dirs_exist_ok=True)
            return local_dir
        return str(folder)

    module.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    return module


# -- aliases and local names ---------------------------------------------------------------
def test_aliases_map_to_hub_ids_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_id("qwen3-0.6b") == "Qwen/Qwen3-Embedding-0.6B" == DEFAULT_MODEL
    assert hub_id("qwen3-4b") == "Qwen/Qwen3-Embedding-4B"
    assert hub_id("Qwen3-8B ") == "Qwen/Qwen3-Embedding-8B"
    assert hub_id("minilm") == MINILM_ID == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("BAAI/bge-m3") == "BAAI/bge-m3"
    assert set(ALIASES) >= {"qwen3-0.6b", "qwen3-4b", "qwen3-8b", "minilm"}


def test_alias_is_resolved_before_the_cache_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, no_modelscope) -> None:
    """`qwen3-4b` finds a cached Qwen/Qwen3-Embedding-4B with the hub gone."""
    with HubServer({"Qwen/Qwen3-Embedding-4B": tiny_model_dir}) as hub:
        use_hub(monkeypatch, endpoint=hub.url, home=tmp_path / "hf")
        download("qwen3-4b")
    resolved = resolve_model("qwen3-4b")  # server stopped: a cache hit or nothing
    assert resolved.model_id == "Qwen/Qwen3-Embedding-4B" and resolved.source == "huggingface"
    assert (resolved.path / "model.safetensors").is_file()


def test_minilm_alias_needs_no_download() -> None:
    resolved = resolve_model("minilm")
    assert resolved.source == "package" and resolved.model_id == MINILM_ID
    assert (resolved.path / "config.json").is_file()
    assert download("minilm").path == resolved.path


def test_relative_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for name in ("models/tiny", "./models/tiny", "models/../models/tiny"):
        resolved = resolve_model(name)
        assert resolved.source == "local" and resolved.path == (tmp_path / "models" / "tiny").resolve(), name
    monkeypatch.chdir(tmp_path / "models")
    assert resolve_model("tiny").source == "local"
    assert resolve_model("./tiny").model_id == tiny_model_dir.name


def test_home_tilde(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    resolved = resolve_model("~/models/tiny")
    assert resolved.source == "local" and resolved.path == tiny_model_dir.resolve()
    embedder = Embedder("~/models/tiny")
    assert embedder.info.source == "local" and embedder.dimension == 64


def test_missing_local_path_is_a_folder_error_not_a_hub_lookup(tmp_path: Path) -> None:
    for name in (str(tmp_path / "nope"), "./nope-qembed", "~/nope-qembed", "a/b/c"):
        with pytest.raises(IncompleteModelFolder, match="does not exist"):
            resolve_model(name)


# -- offline -------------------------------------------------------------------------------
def test_hf_hub_offline_without_cache_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_modelscope) -> None:
    use_hub(monkeypatch, endpoint=closed_port_url(), home=tmp_path / "hf", offline=True)
    start = time.monotonic()
    with pytest.raises(ModelNotAvailable) as info:
        Embedder("Org/Missing")
    assert time.monotonic() - start < FAST
    message = info.value.message
    assert "Org/Missing" in message and "HF_HUB_OFFLINE" in message
    assert "local folder" in message and "minilm" in message


def test_unreachable_hub_without_cache_fails_at_once(unreachable_hub: str, no_modelscope, caplog) -> None:
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="qembed"), pytest.raises(ModelNotAvailable) as info:
        Embedder("Org/Missing")
    assert time.monotonic() - start < FAST
    message = info.value.message
    assert "Org/Missing" in message and "could not be reached" in message
    assert "local folder" in message and "minilm" in message and "modelscope" in message.lower()
    tries = [r for r in caplog.records if r.name.startswith("qembed") and "ModelScope" in r.getMessage()]
    assert len(tries) == 1


def test_source_huggingface_does_not_try_modelscope(unreachable_hub: str, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "modelscope", _fake_modelscope(tiny_model_dir, calls))
    with pytest.raises(ModelNotAvailable, match="Cannot reach the Hugging Face hub"):
        Embedder("Org/Missing", source="huggingface")
    assert calls == []


def test_unreachable_hub_falls_back_to_modelscope(unreachable_hub: str, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_embedder: Embedder, caplog) -> None:
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "modelscope", _fake_modelscope(tiny_model_dir, calls))
    with caplog.at_level(logging.INFO, logger="qembed"):
        embedder = Embedder("Org/Tiny")
    lines = [r for r in caplog.records if r.name.startswith("qembed") and "ModelScope" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING, [r.getMessage() for r in caplog.records]
    assert "Org/Tiny" in lines[0].getMessage()
    assert calls and calls[0]["model_id"] == "Org/Tiny"
    assert embedder.info.source == "modelscope" and embedder.info.model_id == "Org/Tiny"
    texts = ["Hello world", "你好"]
    np.testing.assert_allclose(embedder.encode(texts), tiny_embedder.encode(texts), atol=1e-6)


def test_source_modelscope_goes_straight_there(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, caplog) -> None:
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "modelscope", _fake_modelscope(tiny_model_dir, calls))
    with caplog.at_level(logging.INFO, logger="qembed"):
        resolved = download("Org/Tiny", source="modelscope", local_dir=tmp_path / "ms")
    assert resolved.source == "modelscope" and resolved.path == (tmp_path / "ms").resolve()
    assert calls[0]["local_dir"] == str((tmp_path / "ms").resolve())
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


def test_modelscope_failure_is_one_clear_error(unreachable_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("modelscope")

    def snapshot_download(*args: object, **kwargs: object) -> str:
        raise ConnectionError("modelscope.cn unreachable")

    module.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelscope", module)
    with pytest.raises(ModelNotAvailable) as info:
        Embedder("Org/Missing")
    assert "ModelScope failed too" in info.value.message and "minilm" in info.value.message


def test_unknown_repo_on_a_reachable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, no_modelscope) -> None:
    with HubServer({"Org/Tiny": tiny_model_dir}) as hub:
        use_hub(monkeypatch, endpoint=hub.url, home=tmp_path / "hf")
        with pytest.raises(ModelNotAvailable, match="not found on the Hugging Face hub"):
            Embedder("Org/Nope")
        with pytest.raises(ModelNotAvailable, match="no revision"):
            Embedder("Org/Tiny", revision="v9")


# -- the default model and its fallback ---------------------------------------------------
def test_default_model_falls_back_to_minilm_loudly(unreachable_hub: str, no_modelscope, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        embedder = Embedder()
    info = embedder.info
    assert info.model_id == MINILM_ID and info.dimension == 384 and embedder.dimension == 384
    assert info.fallback_reason and DEFAULT_MODEL in info.fallback_reason
    assert info.source == "package"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and "FALLING BACK" in r.getMessage()]
    assert len(loud) == 1 and DEFAULT_MODEL in loud[0].getMessage()
    assert embedder.encode("hello").shape == (384,)


def test_named_default_model_does_not_fall_back(unreachable_hub: str, no_modelscope) -> None:
    """Only an unnamed model falls back: naming the default explicitly fails instead."""
    with pytest.raises(ModelNotAvailable):
        Embedder(DEFAULT_MODEL)
    with pytest.raises(ModelNotAvailable):
        Embedder("qwen3-0.6b")


def test_default_model_is_used_when_it_can_be_had(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, no_modelscope) -> None:
    monkeypatch.delenv("QEMBED_MODEL", raising=False)
    with HubServer({DEFAULT_MODEL: tiny_model_dir}) as hub:
        use_hub(monkeypatch, endpoint=hub.url, home=tmp_path / "hf")
        embedder = Embedder()
    assert embedder.info.model_id == DEFAULT_MODEL and embedder.info.fallback_reason is None
    assert embedder.info.source == "huggingface" and embedder.dimension == 64
