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

Use: ``Embedder.encode`` consults the cache by itself when ``cache_size`` or
``cache_dir`` is set. The server, which runs ``prepare``/``run``/``finish`` itself,
calls ``lookup()`` first, prepares only ``Lookup.missing_inputs``, and hands the finished
vectors of those to ``Lookup.complete`` (which stores them and returns every input's
vector in order).
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

from qembed.encode.windows import Window

if TYPE_CHECKING:  # the engine knows the Embedder only by duck type (no import cycle)
    from qembed.embedding.embedder import Embedder, Prepared

log = logging.getLogger(__name__)

DB_FILE = "embeddings.sqlite3"
Item = str | tuple[int, ...]


@dataclass(frozen=True)
class CacheEntry:
    """One input's finished vector and the tokens it cost."""

    vector: np.ndarray
    tokens: int


class EmbeddingCache:
    """LRU in memory (``max_entries``, 0 = none) plus an optional SQLite file in ``directory``."""

    def __init__(self, max_entries: int = 0, *, directory: str | Path | None = None, namespace: str = "") -> None:
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
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers in other processes do not block writers
            self._db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, tokens INTEGER NOT NULL, vector BLOB NOT NULL)")
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
                    for key, tokens, blob in self._db.execute(f"SELECT key, tokens, vector FROM entries WHERE key IN ({marks})", part):
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
                self._db.executemany(
                    "INSERT OR REPLACE INTO entries (key, tokens, vector) VALUES (?, ?, ?)",
                    [(k, e.tokens, np.ascontiguousarray(e.vector, dtype=np.float32).tobytes()) for k, e in zip(keys, entries, strict=True)],
                )
                self._db.commit()

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


# -- what an encode call asks for ------------------------------------------------------------
def split_inputs(inputs: Any) -> list[Item] | None:
    """The inputs of one call as cacheable items, or None when they are not plainly texts or
    token lists (then ``prepare`` gets them unchanged and gives its own error)."""
    if isinstance(inputs, str):
        return [inputs]
    try:
        items = list(inputs)
    except TypeError:
        return None
    if not items:
        return None
    if all(isinstance(x, str) for x in items):
        return items
    if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        return [tuple(items)]  # one tokenized input
    if all(isinstance(x, Sequence) and not isinstance(x, str) and all(isinstance(t, int) and not isinstance(t, bool) for t in x) for x in items):
        return [tuple(x) for x in items]
    return None


def options_key(
    embedder: Embedder,
    *,
    prompt_name: str | None = None,
    prompt: str | None = None,
    instruction: str | None = None,
    task: str | None = None,
    input_type: str = "query",
    dimensions: int | None = None,
    normalize: bool | None = None,
    long_text: str | None = None,
    truncation_side: str | None = None,
) -> str:
    """The options that shape a vector, resolved (so ``task="sts"`` and the prompt it stands
    for share entries) and validated the way ``prepare`` validates them."""
    from qembed.model.instructions import resolve_prompt

    prefix = resolve_prompt(embedder.spec, prompt_name=prompt_name, prompt=prompt, instruction=instruction, task=task, input_type=input_type)
    dims = embedder.check_dimensions(dimensions)
    return json.dumps(
        [
            prefix,
            dims,
            embedder.spec.normalize if normalize is None else bool(normalize),
            long_text or embedder.settings.long_text,
            truncation_side or embedder.settings.truncation_side,
        ]
    )


def namespace(embedder: Embedder) -> str:
    """What identifies the model and engine settings behind a vector."""
    import qembed
    from qembed.model.backends.artifacts import model_revision

    s = embedder.settings
    return json.dumps(
        {
            "model": str(embedder.resolved.path),
            "revision": model_revision(embedder.resolved.path),
            "backend": embedder.backend.name,
            "dtype": embedder.backend.dtype,
            "quantize": s.quantize,
            "max_tokens": embedder.max_tokens,
            "chunk_overlap": embedder.chunk_overlap,
            "qembed": getattr(qembed, "__version__", "?"),
        },
        sort_keys=True,
    )


def tokens_per_input(windows: Sequence[Window], n_inputs: int) -> list[int]:
    """Tokens each input cost (sum of its windows, special tokens and prompt included)."""
    out = [0] * n_inputs
    for window in windows:
        out[window.owner] += len(window.ids)
    return out


@dataclass
class Lookup:
    """One call's inputs split into cached and missing."""

    cache: EmbeddingCache
    items: list[Item]
    keys: list[str]
    found: list[CacheEntry | None]
    missing: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.missing = [i for i, entry in enumerate(self.found) if entry is None]

    @property
    def missing_inputs(self) -> list[Any]:
        """What to send to ``prepare`` (texts, or token id lists)."""
        return [self.items[i] if isinstance(self.items[i], str) else list(self.items[i]) for i in self.missing]

    def complete(self, vectors: np.ndarray | None, tokens: Sequence[int] = ()) -> tuple[np.ndarray, int]:
        """Store the finished ``vectors`` (and per-input ``tokens``) of ``missing_inputs`` and
        return ``(vectors of every input in order, total tokens)``."""
        if self.missing:
            if vectors is None or len(vectors) != len(self.missing) or len(tokens) != len(self.missing):
                raise ValueError("complete() needs one vector and one token count per missing input")
            entries = [CacheEntry(_frozen(v), int(t)) for v, t in zip(vectors, tokens, strict=True)]
            self.cache.put_many([self.keys[i] for i in self.missing], entries)
            for i, entry in zip(self.missing, entries, strict=True):
                self.found[i] = entry
        done = [e for e in self.found if e is not None]
        return np.stack([e.vector for e in done]).astype(np.float32, copy=False), sum(e.tokens for e in done)


def lookup(cache: EmbeddingCache, embedder: Embedder, inputs: Any, **options: Any) -> Lookup | None:
    """Split ``inputs`` into cached and missing; None when they are not cacheable as given.
    Raises ``InputError`` for invalid options, like ``prepare``."""
    items = split_inputs(inputs)
    if items is None:
        return None
    opts = options_key(embedder, **options)
    keys = [cache.key(opts, item) for item in items]
    return Lookup(cache, items, keys, cache.get_many(keys))


def encode_cached(
    cache: EmbeddingCache,
    embedder: Embedder,
    inputs: Any,
    run: Callable[[Prepared], np.ndarray],
    **options: Any,
) -> tuple[np.ndarray, int]:
    """``Embedder.encode_with_usage`` through the cache: only the missing inputs are prepared
    and run (``run``: prepared -> finished vectors)."""
    found = lookup(cache, embedder, inputs, **options)
    if found is None:
        prepared = embedder.prepare(inputs, **options)
        return run(prepared), prepared.prompt_tokens
    if not found.missing:
        return found.complete(None)
    prepared = embedder.prepare(found.missing_inputs, **options)
    vectors = run(prepared)
    return found.complete(vectors, tokens_per_input(prepared.windows, prepared.n_inputs))
