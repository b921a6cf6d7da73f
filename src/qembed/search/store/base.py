"""The one interface both deployments implement: embedded (SQLite + vector file) and Milvus.

Why this shape: the indexer only ever *replaces whole documents* (delete its old chunks,
insert the new ones, record the document's hash last), so a store needs no chunk-level
update logic, and an interrupted run is repaired by the next one, which sees the old hash
and redoes that document. Vectors can be looked up by content hash, so unchanged text is
never embedded twice even when the chunk moved (a paragraph inserted above it).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qembed.errors import InputError
from qembed.search.documents import Chunk

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def check_name(name: str | None) -> str:
    if not name:
        raise InputError("give the index a name with --index NAME.", param="index")
    if not NAME.match(name):
        raise InputError(
            f"index name {name!r} is not valid: use letters, digits, '-' and '_' (at most 63, starting with a letter or digit).",
            param="index",
        )
    return name


@dataclass(frozen=True)
class Filters:
    """Metadata filters; every given one must match (AND)."""

    path_prefix: str | None = None
    language: str | None = None
    file_type: str | None = None

    def __post_init__(self) -> None:
        for name in ("path_prefix", "language", "file_type"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InputError(f"filter {name} must be a string.", param=f"filters.{name}")

    @property
    def empty(self) -> bool:
        return not (self.path_prefix or self.language or self.file_type)

    def normalized_file_type(self) -> str | None:
        return self.file_type.lower().lstrip(".") if self.file_type else None

    def matches(self, chunk: Chunk) -> bool:
        if self.path_prefix and not chunk.path.startswith(self.path_prefix):
            return False
        if self.language and chunk.language != self.language.lower():
            return False
        ftype = self.normalized_file_type()
        return not (ftype and chunk.file_type != ftype)


@dataclass
class DocumentUpdate:
    """A document's new state: all its chunks (possibly none) and their vectors, row for row."""

    doc_id: str
    doc_hash: str
    path: str
    chunks: list[Chunk]
    vectors: np.ndarray  # float32 [len(chunks), dim], unit length


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


@dataclass
class StoreStats:
    documents: int
    chunks: int
    dimension: int | None
    details: dict[str, Any] = field(default_factory=dict)


class Store(ABC):
    """Where an index lives. Implementations must be safe to call from several threads."""

    name: str
    kind: str

    # -- index-level facts (model, dimension, chunking) ---------------------------------------
    @abstractmethod
    def get_meta(self) -> dict[str, str]: ...

    @abstractmethod
    def set_meta(self, values: dict[str, str]) -> None: ...

    # -- incremental indexing ---------------------------------------------------------------
    @abstractmethod
    def doc_hashes(self, prefix: str = "") -> dict[str, str]:
        """doc_id -> content hash of the documents whose id starts with ``prefix``."""

    @abstractmethod
    def vectors_for(self, content_hashes: Collection[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunks with these content hashes (any document)."""

    @abstractmethod
    def write(self, updates: Sequence[DocumentUpdate], deletes: Sequence[str] = ()) -> None:
        """Replace the given documents and delete others, as one commit where the store allows."""

    # -- search -----------------------------------------------------------------------------
    @abstractmethod
    def dense_search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        """Top k chunks by inner product with a unit query vector."""

    @abstractmethod
    def text_search(self, terms: Sequence[str], k: int, filters: Filters | None = None) -> list[Hit]:
        """Top k chunks by BM25 over ``bm25.terms`` (any term may match)."""

    @abstractmethod
    def chunks_of(self, doc_id: str) -> list[Chunk]:
        """A document's chunks in order."""

    @abstractmethod
    def stats(self) -> StoreStats: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- integrity and writers (the embedded store implements both; Milvus keeps its own) ----------
    def check(self, *, full: bool = False, load: bool = True) -> None:
        """Raise ``IndexDamaged`` when the index fails its checks (``full``: the slow ones too;
        ``load=False``: only what needs no read of the vectors, e.g. file sizes)."""
        return None  # stores without checks of their own (Milvus checks its own data)

    def check_ann(self) -> str | None:
        """One line on the store's own ANN graph for ``qembed index --check`` (None: none kept)."""
        return None  # Milvus indexes its own vectors

    def writer(self, timeout: float = 30.0, what: str | None = None) -> Any:
        """A context manager holding the index's one-writer lock for a whole indexing run."""
        return nullcontext()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def check_update_vectors(update: DocumentUpdate) -> None:
    """Refuse a document whose vectors hold NaN/inf or an all-zero row, naming the document and chunk."""
    v = np.asarray(update.vectors, dtype=np.float32)
    if v.ndim != 2 or not len(v):
        return
    finite = np.asarray(np.isfinite(v).all(axis=1))
    zero = ~np.asarray(v.any(axis=1))
    bad = np.flatnonzero(~finite | zero)
    if bad.size:
        i = int(bad[0])
        what = "NaN or infinite values" if not finite[i] else "all zeros"
        where = ""
        if i < len(update.chunks):
            c = update.chunks[i]
            where = f" ({c.path}:{c.line_start}-{c.line_end})"
        raise InputError(
            f"document {update.doc_id!r}: the vector of chunk {i}{where} is {what}; nothing was written. "
            "A vector like this cannot be searched (the model or the caller produced it).",
            param="vectors",
        )


def normalize_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """float32 unit rows; rejects wrong shapes and non-finite values instead of storing them."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != dim:
        raise InputError(f"vectors must have shape [n, {dim}], got {list(v.shape)}.", param="vectors")
    if not np.all(np.isfinite(v)):
        raise InputError("vectors contain NaN or infinite values.", param="vectors")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InputError(
            "a vector is all zeros; it cannot be searched by cosine similarity.", param="vectors"
        )
    return np.ascontiguousarray(v / norms, dtype=np.float32)
