"""The vector cache of ``qembed eval``: a second evaluation of the same corpus embeds nothing.

It is the embedding cache of the Python API and the server (``qembed.embedding.cache.
EmbeddingCache``: one implementation, one SQLite file), seen through one namespace per
target and prompt. An evaluation target may be a remote server, so the namespace is the
target's identity (model, weights fingerprint, endpoint, ...) and the prompt its side
really got, not the Embedder's own namespace.

Why it survives interruptions: each chunk of vectors is written in one SQLite transaction
as soon as the target returns it, so a Ctrl-C, a crash or a killed job loses at most the
chunk in flight, never what is stored; the next run embeds only what is missing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qembed.common.paths import eval_cache_dir
from qembed.embedding.cache import CacheEntry, EmbeddingCache

FORMAT_VERSION = 2


def default_cache_root() -> Path:
    """``eval/`` under the qembed cache home (``$QEMBED_CACHE_HOME``, see qembed.common.paths)."""
    return eval_cache_dir()


def namespace_id(namespace: dict[str, Any]) -> str:
    blob = json.dumps(
        {"format": FORMAT_VERSION, **namespace}, sort_keys=True, ensure_ascii=False, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class VectorStore:
    """The cached vectors of one namespace (one target, one prompt)."""

    def __init__(self, cache: EmbeddingCache, namespace: dict[str, Any]) -> None:
        self.cache = cache
        self.namespace = namespace
        self._options = namespace_id(namespace)

    def get_many(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        found = self.cache.get_many([self.cache.key(self._options, t) for t in texts])
        return [None if entry is None else entry.vector for entry in found]

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one chunk (one transaction: all of it or, if interrupted, none)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        keys = [self.cache.key(self._options, t) for t in texts]
        self.cache.put_many(keys, [CacheEntry(row, 0) for row in vectors])


class VectorCache:
    """``root/embeddings.sqlite3``: every namespace's vectors, on disk only (no memory LRU:
    an evaluation reads each text once)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self._cache: EmbeddingCache | None = None

    @property
    def store(self) -> EmbeddingCache:
        if self._cache is None:  # opened on first use: `--no-cache` runs never create the file
            self._cache = EmbeddingCache(0, directory=self.root)
        return self._cache

    def open(self, namespace: dict[str, Any]) -> VectorStore:
        return VectorStore(self.store, namespace)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
