"""Pack windows into model batches: length-sorted, under a token budget and a row cap.

Sorting by length keeps padding small; the budget counts *padded* tokens (rows x longest
row), which is what the model pays for. Used by ``Embedder.encode`` and the server queue.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qembed.encode.windows import Window


def plan_batches(lengths: Sequence[int], *, max_tokens: int, max_rows: int) -> list[list[int]]:
    """Indices grouped into batches, longest first; every batch fits ``max_tokens`` padded tokens
    (a single row longer than the budget gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = lengths[i]
        width = max(longest, length)
        if current and (width * (len(current) + 1) > max_tokens or len(current) >= max_rows):
            batches.append(current)
            current, width = [], length
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


def pad_windows(
    windows: Sequence[Window], *, pad_id: int, side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[batch, seq] ids and attention mask (left or right padded) and the per-row pooling skip."""
    width = max(len(w.ids) for w in windows)
    ids = np.full((len(windows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(windows), width), dtype=np.int64)
    for row, window in enumerate(windows):
        n = len(window.ids)
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, cols] = window.ids
        mask[row, cols] = 1
    skip = np.array([w.skip for w in windows], dtype=np.int64)
    return ids, mask, skip
