"""A small corpus (short texts, some repeated words) as JSONL and as Parquet, and helpers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

WORDS = (
    "alpha beta gamma delta kubernetes pod pending node search vector embedding model token batch "
    "the a of in on 数据 向量 检索 résumé naïve"
).split()


def make_docs(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"id": f"doc-{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(2, 16)))} for i in range(n)]


def write_jsonl(path: Path, docs: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    return path


def write_parquet(path: Path, docs: list[dict[str, str]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(docs), path)
    return path


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


@pytest.fixture(scope="session")
def corpus_docs() -> list[dict[str, str]]:
    return make_docs(240)


@pytest.fixture(scope="session")
def corpus_reference(tiny_embedder, corpus_docs) -> dict[str, np.ndarray]:
    """Embedder.encode of every text as the job encodes it (retrieval documents), by id."""
    vectors = tiny_embedder.encode([d["text"] for d in corpus_docs], task="retrieval", input_type="document")
    return {d["id"]: v for d, v in zip(corpus_docs, vectors, strict=True)}
