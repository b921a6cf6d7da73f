"""Texts -> vectors for an evaluation: each distinct text once, cache first, progress shown.

Missing texts are sent longest first in chunks of ``target.chunk_size``: similar lengths
share a padded batch (less padding), and the first chunk, the slowest, tells the user
early how long the whole run will take. Each finished chunk goes to the cache at once
(one transaction), so Ctrl-C keeps the work done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qembed.errors import TargetError
from qembed.eval.cache import VectorCache
from qembed.eval.prompts import Prompting, Role
from qembed.eval.targets import Target


@dataclass
class EncodeCounts:
    """How many texts an evaluation needed, and how many were really embedded."""

    texts: int = 0
    unique: int = 0
    cached: int = 0
    embedded: int = 0

    def add(self, other: EncodeCounts) -> None:
        self.texts += other.texts
        self.unique += other.unique
        self.cached += other.cached
        self.embedded += other.embedded


def cache_namespace(target: Target, prompting: Prompting, role: Role) -> dict[str, Any]:
    """What changes the vectors: the target, and the prompt this side actually gets (not how
    it was asked for: in process, two presets with the same prefix share their vectors)."""
    return {"target": target.identity(), "prompt": target.prompt_description(prompting, role)}


def encode_texts(
    target: Target,
    texts: Sequence[str],
    prompting: Prompting,
    role: Role,
    *,
    cache: VectorCache | None = None,
    progress: Any = None,
    label: str = "embedding",
) -> tuple[np.ndarray, EncodeCounts]:
    """[len(texts), dim] float32 vectors, L2-normalized (every metric here is cosine).

    ``progress``: a ``rich.progress.Progress`` (or None for no bar).
    """
    unique = list(dict.fromkeys(texts))
    position = {t: i for i, t in enumerate(unique)}
    counts = EncodeCounts(texts=len(texts), unique=len(unique))
    rows: list[np.ndarray | None] = [None] * len(unique)
    store = cache.open(cache_namespace(target, prompting, role)) if cache is not None else None
    if store is not None:
        rows = store.get_many(unique)
    missing = sorted((i for i, row in enumerate(rows) if row is None), key=lambda i: -len(unique[i]))
    counts.cached = len(unique) - len(missing)
    description = f"{target.name}: {label}"  # several targets share one progress display in `compare`
    task = (
        progress.add_task(description, total=len(unique), completed=counts.cached)
        if progress is not None
        else None
    )
    for start in range(0, len(missing), target.chunk_size):
        chunk = missing[start : start + target.chunk_size]
        vectors = np.asarray(target.embed([unique[i] for i in chunk], prompting, role), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(chunk):
            raise TargetError(f"{target.name} returned shape {vectors.shape} for {len(chunk)} texts.")
        if store is not None:  # stored at once: an interrupted run keeps every finished chunk
            store.add([unique[i] for i in chunk], vectors)
        for i, row in zip(chunk, vectors, strict=True):
            rows[i] = row
        counts.embedded += len(chunk)
        if task is not None:
            progress.advance(task, len(chunk))
    matrix = np.stack(rows) if unique else np.zeros((0, 0), dtype=np.float32)  # type: ignore[arg-type]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise TargetError(f"{target.name} returned a zero vector; cosine similarity is undefined for it.")
    matrix = matrix / norms
    return matrix[[position[t] for t in texts]], counts
