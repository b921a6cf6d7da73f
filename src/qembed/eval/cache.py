"""On-disk vector cache: a second evaluation of the same corpus embeds nothing.

Layout: ``ROOT/<namespace hash>/`` holds ``meta.json`` (the namespace in clear: target
identity and the prompt each text got) and shards ``*.npz`` with ``keys`` (16-byte
SHA-256 prefixes of the texts) and ``vectors`` (float32).

Why shards: each shard is written to a temporary name, fsynced and renamed into place, so
a shard is either complete or absent. Interrupting an evaluation (Ctrl-C, a crash, a
killed job) can lose at most the rows not yet flushed, never corrupt what is there; the
next run embeds only what is missing. Many shards are merged into one when a namespace is
opened (merge first, delete after: an interrupted merge only leaves duplicates).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEY_BYTES = 16
MERGE_ABOVE = 32  # shards per namespace before they are merged on open
STALE_TMP_SECONDS = 3600


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qembed" / "eval"


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:KEY_BYTES]


def namespace_id(namespace: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **namespace}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class VectorStore:
    """The cached vectors of one namespace (one target, one prompt)."""

    def __init__(self, folder: Path, namespace: dict[str, Any], *, flush_rows: int = 1024, flush_seconds: float = 30.0) -> None:
        self.folder = folder
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "meta.json"
        if not meta.exists():
            text = json.dumps({"format": FORMAT_VERSION, **namespace}, indent=2, sort_keys=True, ensure_ascii=False, default=str)
            _atomic_write(meta, lambda h: h.write(text.encode("utf-8")))
        self._vectors: dict[bytes, np.ndarray] = {}
        self._dim: int | None = None
        self._pending_keys: list[bytes] = []
        self._pending_vectors: list[np.ndarray] = []
        self._last_flush = time.monotonic()
        self._load()

    # -- reading --------------------------------------------------------------------------
    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npz"))

    def _load(self) -> None:
        now = time.time()
        for tmp in self.folder.glob(".*.tmp"):  # left by a writer that died; young ones may be live
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink(missing_ok=True)
        shards = self._shards()
        for shard in shards:
            try:
                with np.load(shard, allow_pickle=False) as data:
                    keys, vectors = data["keys"], data["vectors"]
            except Exception as exc:  # noqa: BLE001 - a bad shard must not take the cache down
                log.warning("ignoring unreadable cache shard %s (%s)", shard, exc)
                continue
            if vectors.ndim != 2 or keys.shape[0] != vectors.shape[0] or (self._dim is not None and vectors.shape[1] != self._dim):
                log.warning("ignoring cache shard %s with shape %s", shard, vectors.shape)
                continue
            self._dim = vectors.shape[1]
            for key, row in zip(keys, vectors, strict=True):
                self._vectors[bytes(key)] = row
        if len(shards) > MERGE_ABOVE:
            self._merge(shards)

    def _merge(self, shards: list[Path]) -> None:
        keys = list(self._vectors)
        self._write_shard(keys, np.stack([self._vectors[k] for k in keys]))
        for shard in shards:
            shard.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, key: bytes) -> np.ndarray | None:
        return self._vectors.get(key)

    # -- writing --------------------------------------------------------------------------
    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but vectors of shape {vectors.shape}.")
        if self._dim is not None and vectors.shape[1] != self._dim:
            raise ValueError(f"vectors of size {vectors.shape[1]} in a cache of size {self._dim}.")
        self._dim = vectors.shape[1]
        for key, row in zip(keys, vectors, strict=True):
            self._vectors[key] = row
        self._pending_keys.extend(keys)
        self._pending_vectors.append(vectors)
        if len(self._pending_keys) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write what was added since the last flush as one complete shard."""
        if not self._pending_keys:
            return
        self._write_shard(self._pending_keys, np.concatenate(self._pending_vectors, axis=0))
        self._pending_keys, self._pending_vectors = [], []
        self._last_flush = time.monotonic()

    def _write_shard(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:6]}.npz"
        _atomic_write(self.folder / name, lambda h: np.savez(h, keys=key_array, vectors=vectors))


class VectorCache:
    """A root folder of namespaces."""

    def __init__(self, root: str | Path | None = None, *, flush_rows: int = 1024) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.flush_rows = flush_rows

    def open(self, namespace: dict[str, Any]) -> VectorStore:
        return VectorStore(self.root / namespace_id(namespace), namespace, flush_rows=self.flush_rows)
