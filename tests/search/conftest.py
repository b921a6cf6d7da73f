"""Helpers for the search tests: a word-count tokenizer for chunking unit tests, a counting
encoder wrapper, and random-vector documents for the store tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qembed.search.documents import Chunk, chunk_id
from qembed.search.store.base import DocumentUpdate


def words(texts: list[str]) -> list[int]:
    """A stand-in tokenizer for structure tests: one token per whitespace-separated word."""
    return [len(t.split()) for t in texts]


class CountingEncoder:
    """Wraps an encoder and records every document text sent to the model."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model, self.model_id, self.dimension, self.window = (
            inner.model,
            inner.model_id,
            inner.dimension,
            inner.window,
        )
        self.embedded: list[str] = []
        self.queries: list[str] = []

    def count_tokens(self, texts):
        return self.inner.count_tokens(texts)

    def encode_documents(self, texts):
        self.embedded.extend(texts)
        return self.inner.encode_documents(texts)

    def encode_query(self, text):
        self.queries.append(text)
        return self.inner.encode_query(text)


def make_chunk(
    doc_id: str,
    ordinal: int,
    text: str,
    *,
    path: str | None = None,
    language: str = "markdown",
    file_type: str = "md",
) -> Chunk:
    return Chunk(
        chunk_id=chunk_id(doc_id, ordinal), doc_id=doc_id, ordinal=ordinal, path=path or doc_id, title=doc_id,
        heading=("H", f"s{ordinal}"), line_start=ordinal * 10 + 1, line_end=ordinal * 10 + 5, language=language,
        file_type=file_type, text=text, context=doc_id, metadata={"n": ordinal},
    )  # fmt: skip


def make_update(
    doc_id: str, texts: list[str], rng: np.random.Generator, dim: int = 8, **kw
) -> DocumentUpdate:
    chunks = [make_chunk(doc_id, i, t, **kw) for i, t in enumerate(texts)]
    vectors = rng.standard_normal((len(texts), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return DocumentUpdate(
        doc_id,
        f"hash-{doc_id}-{len(texts)}-{texts[0] if texts else ''}",
        path=kw.get("path") or doc_id,
        chunks=chunks,
        vectors=vectors,
    )


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "qembed-data"


K8S_JSONL = "k8s_docs_en_zh/k8s_docs_tasks_concepts_en_zh.jsonl"
TARGET = "docs/tasks/debug/debug-application/debug-pods.md"


def k8s_subset(shared_data: Path, n_distractors: int = 60) -> list[dict]:
    """The target page plus the ``n_distractors`` shortest other pages with English text
    (all real Kubernetes pages; the shortest keep the default suite fast on 2 cores)."""
    import json

    rows = [json.loads(line) for line in (shared_data / K8S_JSONL).open(encoding="utf-8")]
    pages = sorted(
        (r for r in rows if r["en_text"].strip() and r["path"] != TARGET), key=lambda r: len(r["en_text"])
    )
    return pages[:n_distractors] + [r for r in rows if r["path"] == TARGET]


def write_pages(rows: list[dict], folder: Path) -> Path:
    """Each page as <path without docs/> Markdown with its title in front matter, as in the repo."""
    for r in rows:
        p = folder / r["path"].removeprefix("docs/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"---\ntitle: {r['en_title']}\n---\n{r['en_text']}", encoding="utf-8")
    return folder
