"""Reranker fixtures: a tiny Qwen3-Reranker (Qwen3ForCausalLM, the real Qwen3 tokenizer, seeded
random weights) and a tiny random one-label BERT cross-encoder (the real uncased WordPiece
tokenizer of the MiniLM package). Built once per session; no network."""

from __future__ import annotations

from pathlib import Path

import pytest

# Prompt + suffix of Qwen3-Reranker take 47 tokens: this window leaves about 30 for the body,
# so truncation is exercised with short texts.
SMALL_WINDOW = 80


@pytest.fixture(scope="session")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qembed.dev.make_model import make_reranker

    return make_reranker(tmp_path_factory.mktemp("models") / "Qwen3-Reranker-tiny", shape="tiny", seed=0)


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qembed.dev.make_model import make_cross_encoder

    return make_cross_encoder(tmp_path_factory.mktemp("models") / "cross-encoder-tiny", shape="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_reranker(reranker_dir: Path):
    from qembed import Reranker

    return Reranker(reranker_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def small_window_reranker(reranker_dir: Path):
    from qembed import Reranker

    return Reranker(reranker_dir, device="cpu", dtype="float32", rerank_max_length=SMALL_WINDOW)


@pytest.fixture(scope="session")
def tiny_cross_encoder(cross_encoder_dir: Path):
    from qembed import Reranker

    return Reranker(cross_encoder_dir, device="cpu", dtype="float32")
