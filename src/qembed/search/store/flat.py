"""Exact top-k inner product over the embedded store's float32 vector file.

Why two passes at scale: a query must read every row, so its time is memory traffic
(100k x 1024 float32 rows = 400 MB, about 30-60 ms on this 2-core machine). A float16 copy
in RAM halves the traffic; its scores are off by ~1e-3, so it only *preselects*
``4k + 64`` candidates, which are then scored again from the float32 rows. The result is
the float32 ranking unless more than 64 rows tie with the k-th within float16 rounding.

The copy is built in a background thread after the first query of a large index, so a
one-shot ``qembed search`` never pays for it and a server pays once (appends convert only
the new rows). Small indexes skip it: one float32 pass is already fast.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from qembed.common.topk import topk

HALF_FROM = 16_000_000  # rows x dims from which the float16 pass pays off
EXTRA_CANDIDATES = 64
STEP = 8192  # rows converted at a time: no second full float32 copy in RAM


class FlatVectors:
    """The rows of one vector file generation, read-only, as of one committed state."""

    def __init__(self, path: Path | None, n_rows: int, dim: int, previous: FlatVectors | None = None) -> None:
        self.path = path
        self.n_rows = n_rows
        self.dim = dim
        self.matrix: np.ndarray | None = None
        self.half: Any = None  # torch float16 tensor [n_rows, dim] once built
        self.ready = threading.Event()
        self._started = False
        self._previous = previous
        if path is None or not n_rows or not dim:
            self.ready.set()
            return
        self.matrix = np.memmap(path, dtype=np.float32, mode="r", shape=(n_rows, dim))
        if n_rows * dim < HALF_FROM:
            self.ready.set()

    def _start_half(self) -> None:
        if self._started or self.ready.is_set():
            return
        self._started = True
        threading.Thread(target=self._build_half, name="qembed-half-vectors", daemon=True).start()

    def _build_half(self) -> None:
        try:
            import torch

            assert self.matrix is not None
            prev = self._previous
            reuse = prev is not None and prev.half is not None and prev.path == self.path and prev.n_rows <= self.n_rows
            parts = [prev.half] if reuse else []
            for i in range(prev.n_rows if reuse else 0, self.n_rows, STEP):
                parts.append(torch.from_numpy(np.array(self.matrix[i : min(i + STEP, self.n_rows)])).to(torch.float16))
            self.half = parts[0] if len(parts) == 1 else torch.cat(parts)
        finally:
            self._previous = None
            self.ready.set()

    def top_k(self, q: np.ndarray, k: int, *, rows: np.ndarray | None = None, dead: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(vector rows, float32 scores) of the k best rows, best first.

        ``rows`` restricts the search to those rows (sorted); ``dead`` masks rows to skip.
        """
        assert self.matrix is not None
        if rows is not None and rows.size < self.n_rows // 4:
            return _best(rows, self.matrix[rows] @ q, k)  # a small subset: one exact pass over it
        half = self.half
        if half is None:
            self._start_half()
            scores = self.matrix @ q
        else:
            import torch

            # Stay in float16: torch's float16 -> float32 cast of the scores cost ~15 ms here.
            scores = torch.mv(half, torch.from_numpy(q).to(torch.float16)).numpy()
        if rows is not None:
            candidates, cand_scores = rows, scores[rows]
        else:
            if dead is not None and dead.any():
                scores = np.where(dead, -np.inf, scores)
            candidates, cand_scores = np.arange(self.n_rows), scores
        if half is None:
            return _best(candidates, cand_scores, k)
        pre, _ = _best(candidates, cand_scores, min(len(candidates), 4 * k + EXTRA_CANDIDATES))
        pre.sort()
        return _best(pre, self.matrix[pre] @ q, k)


def _best(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of ``rows`` by ``scores`` (equal scores in row order), masked rows dropped."""
    top, best = topk(scores, k)
    keep = np.isfinite(best)
    return rows[top][keep], best[keep]
