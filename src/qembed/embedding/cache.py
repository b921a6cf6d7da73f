"""An LRU embedding cache: the same text, model and options never cost a forward pass twice.

Re-indexing a corpus where most documents did not change, or a search box whose popular
queries repeat, sends the same inputs again and again. The cache keeps each input's
*final* vector (after chunk averaging, normalization and Matryoshka truncation) and its
token count (so usage reporting does not change on a hit).

Key: a SHA-256 of

- the namespace: model folder and revision (config + weight sizes/mtimes, hub commit),
  backend, quantization, dtype, window size and chunk overlap, and qembed's version
  (a disk cache outlives the process, and a fix in qembed may change vectors);
- the options that change a vector: the resolved prompt text, dimensions, normalize,
  long-text policy and truncation side;
- the input itself (text, or the token ids).

Storage: an in-memory LRU of ``cache_size`` entries, and optionally a SQLite file in
``cache_dir`` (shared by processes, survives restarts; hits from disk are promoted to
memory). Hits and misses are counted for the server's metrics (``stats()``, and an
``on_lookup(hits, misses)`` hook for a Prometheus counter).

Use: one flow, ``CachedCall`` (``Embedder.begin`` starts it): the Python API and the
server both prepare and run only ``CachedCall.todo`` and hand the finished vectors to
``CachedCall.finish``. The cache knows nothing of the Embedder (it sits below it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qembed.common.sqlite import connect_wal
from qembed.encode.inputs import Inputs, Item
from qembed.errors import InternalError

if TYPE_CHECKING:
    from qembed.encode.options import ResolvedOptions

log = logging.getLogger(__name__)

DB_FILE = "embeddings.sqlite3"


@dataclass(frozen=True)
class CacheEntry:
    """One input's finished vector and the tokens it cost."""

    vector: np.ndarray
    tokens: int


class EmbeddingCache:
    """LRU in memory (``max_entries``, 0 = none) plus an optional SQLite file in ``directory``."""

    def __init__(
        self, max_entries: int = 0, *, directory: str | Path | None = None, namespace: str = ""
    ) -> None:
        self.max_entries = int(max_entries)
        self.namespace = namespace
        self.hits = 0
        self.misses = 0
        self.on_lookup: Callable[[int, int], None] | None = None
        self._memory: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.path: Path | None = None
        if directory is not None:
            self.path = Path(directory).expanduser() / DB_FILE
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect_wal(self.path, timeout=30.0, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, tokens INTEGER NOT NULL, vector BLOB NOT NULL)"
            )
            self._db.commit()

    @classmethod
    def from_settings(cls, settings: Any, namespace: str | Callable[[], str]) -> EmbeddingCache | None:
        """The cache ``settings.cache_size`` / ``settings.cache_dir`` ask for, or None when off
        (``namespace`` may be a function, called only when the cache is on)."""
        if not settings.cache_size and not settings.cache_dir:
            return None
        name = namespace() if callable(namespace) else namespace
        return cls(settings.cache_size, directory=settings.cache_dir, namespace=name)

    # -- keys ------------------------------------------------------------------------------
    def key(self, options_key: str, item: Item) -> str:
        h = hashlib.sha256()
        h.update(self.namespace.encode())
        h.update(b"\0")
        h.update(options_key.encode())
        h.update(b"\0")
        if isinstance(item, str):
            h.update(b"t")
            h.update(item.encode("utf-8", "surrogatepass"))
        else:
            h.update(b"i")
            h.update(np.asarray(item, dtype=np.int64).tobytes())
        return h.hexdigest()

    # -- storage ---------------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """Entries for ``keys`` (None where absent); counts hits and misses."""
        found: list[CacheEntry | None] = [None] * len(keys)
        with self._lock:
            for i, key in enumerate(keys):
                entry = self._memory.get(key)
                if entry is not None:
                    self._memory.move_to_end(key)
                    found[i] = entry
            todo = [i for i, entry in enumerate(found) if entry is None]
            if todo and self._db is not None:
                rows = {}
                wanted = list({keys[i] for i in todo})
                for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                    part = wanted[start : start + 500]
                    marks = ",".join("?" * len(part))
                    for key, tokens, blob in self._db.execute(
                        f"SELECT key, tokens, vector FROM entries WHERE key IN ({marks})", part
                    ):
                        rows[key] = CacheEntry(_frozen(np.frombuffer(blob, dtype=np.float32)), int(tokens))
                for i in todo:
                    entry = rows.get(keys[i])
                    if entry is not None:
                        found[i] = entry
                        self._remember(keys[i], entry)
            hits = sum(entry is not None for entry in found)
            self.hits += hits
            self.misses += len(keys) - hits
        if self.on_lookup is not None:
            self.on_lookup(hits, len(keys) - hits)
        return found

    def put_many(self, keys: Sequence[str], entries: Sequence[CacheEntry]) -> None:
        with self._lock:
            for key, entry in zip(keys, entries, strict=True):
                self._remember(key, entry)
            if self._db is not None:
                try:  # one transaction: all of these entries or (interrupted) none
                    self._db.executemany(
                        "INSERT OR REPLACE INTO entries (key, tokens, vector) VALUES (?, ?, ?)",
                        [
                            (k, e.tokens, np.ascontiguousarray(e.vector, dtype=np.float32).tobytes())
                            for k, e in zip(keys, entries, strict=True)
                        ],
                    )
                    self._db.commit()
                except BaseException:
                    self._db.rollback()
                    raise

    def _remember(self, key: str, entry: CacheEntry) -> None:
        if self.max_entries <= 0:
            return
        self._memory[key] = entry
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        return len(self._memory)

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
            "entries": len(self._memory),
            "max_entries": self.max_entries,
            "disk": str(self.path) if self.path else None,
        }

    def clear(self) -> None:
        with self._lock:
            self._memory.clear()
            if self._db is not None:
                self._db.execute("DELETE FROM entries")
                self._db.commit()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _frozen(vector: np.ndarray) -> np.ndarray:
    """A read-only float32 copy: callers get views of it stacked into new arrays, never it."""
    out = np.array(vector, dtype=np.float32, copy=True)
    out.setflags(write=False)
    return out


# -- one encode call through the cache ------------------------------------------------------------
def namespace(
    model_path: str | Path, *, backend: str, dtype: str, quantize: str, max_tokens: int, chunk_overlap: int
) -> str:
    """What identifies the model and engine settings behind a vector."""
    from qembed._version import __version__
    from qembed.common.fingerprint import model_fingerprint

    return json.dumps(
        {
            "model": str(model_path),
            "revision": model_fingerprint(Path(model_path)),
            "backend": backend,
            "dtype": dtype,
            "quantize": quantize,
            "max_tokens": max_tokens,
            "chunk_overlap": chunk_overlap,
            "qembed": __version__,
        },
        sort_keys=True,
    )


@dataclass
class CachedCall:
    """One encode call: which inputs still need the model (``todo``), and the answer.

    The one flow of the cache, used by ``Embedder.encode`` and the server's service alike:
    ``begin`` looks every input up, the caller prepares and runs only ``todo`` (an
    ``Inputs`` subset that keeps the caller's numbering, so an error about one of them
    names the caller's ``input[i]``), and ``finish`` stores the new vectors and returns
    every input's vector in request order. Without a cache ``todo`` is all the inputs.
    """

    inputs: Inputs
    cache: EmbeddingCache | None = None
    keys: list[str] = field(default_factory=list)
    found: list[CacheEntry | None] = field(default_factory=list)

    @classmethod
    def begin(cls, cache: EmbeddingCache | None, inputs: Inputs, options: ResolvedOptions) -> CachedCall:
        if cache is None:
            return cls(inputs)
        opts = options.key()
        keys = [cache.key(opts, item) for item in inputs.items]
        return cls(inputs, cache, keys, cache.get_many(keys))

    @property
    def missing(self) -> list[int]:
        if self.cache is None:
            return list(range(len(self.inputs)))
        return [i for i, entry in enumerate(self.found) if entry is None]

    @property
    def todo(self) -> Inputs | None:
        """The inputs the model must embed; None when the cache had every one."""
        missing = self.missing
        if not missing:
            return None
        return self.inputs if len(missing) == len(self.inputs) else self.inputs.subset(missing)

    def finish(self, vectors: np.ndarray | None, tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        """``vectors``/``tokens``: one per ``todo`` input. Returns (every input's vector, total tokens)."""
        missing = self.missing
        if missing and (vectors is None or len(vectors) != len(missing) or len(tokens) != len(missing)):
            raise InternalError("finish() needs one vector and one token count per input of todo")
        if self.cache is None:
            assert vectors is not None
            return vectors, int(sum(tokens))
        if missing:
            assert vectors is not None
            entries = [CacheEntry(_frozen(v), int(t)) for v, t in zip(vectors, tokens, strict=True)]
            self.cache.put_many([self.keys[i] for i in missing], entries)
            for i, entry in zip(missing, entries, strict=True):
                self.found[i] = entry
        done = [e for e in self.found if e is not None]
        return np.stack([e.vector for e in done]).astype(np.float32, copy=False), sum(e.tokens for e in done)
