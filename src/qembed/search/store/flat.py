"""Exact top-k inner product over the embedded store's float32 vector file.

Why two passes at scale: a query must read every row, so its time is memory traffic
(100k x 1024 float32 rows = 400 MB, about 30-60 ms on this 2-core machine). A float16 copy
in RAM halves the traffic; its scores are off by ~1e-3, so it only *preselects*
``4k + 64`` candidates, which are then scored again from the float32 rows. The result is
the float32 ranking unless more than 64 rows tie with the k-th within float16 rounding.

The copy is built in a background thread after the first query of a large index, so a
one-shot ``qembed search`` never pays for it and a server pays once (appends convert only
the new rows). Small indexes skip it: one float32 pass is already fast.

Why the rows are read into memory, not memory-mapped: a mapped file that shrinks under a
reader (truncated by a disk-full copy, a bad restore, a stray ``truncate``) kills the whole
process with SIGBUS on the next product, which Python cannot catch. Reading costs one
sequential pass at open (and only the appended rows after each commit: snapshots of one
file share a growing ``RowBuffer``), and lets every loaded row be checked on the way in:
the file's size against the committed row count, the running CRC-32 the writer recorded
with each commit, and finiteness. A failed check raises ``IndexDamaged``; each search also
re-checks the file's size (one ``os.stat``), so a damaged index answers an error, not a
signal and not an empty result.
"""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from qembed.common.topk import topk
from qembed.errors import IndexDamaged

HALF_FROM = 16_000_000  # rows x dims from which the float16 pass pays off
EXTRA_CANDIDATES = 64
STEP = 8192  # rows converted at a time: no second full float32 copy in RAM
READ_STEP = 1 << 24  # bytes read (and checksummed) at a time


def crc_of_file(path: Path, nbytes: int, crc: int = 0, start: int = 0) -> int:
    """CRC-32 of bytes [start, start + nbytes) of ``path`` continuing ``crc``; short file -> OSError."""
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        left = nbytes
        while left:
            data = f.read(min(left, READ_STEP))
            if not data:
                raise OSError(f"{path.name} ends {left} bytes early")
            crc = zlib.crc32(data, crc)
            left -= len(data)
    return crc


class RowBuffer:
    """Rows [0, count) of one vector file in memory, grown in place as commits append rows.

    Snapshots hold views ``data[:n_rows]``; rows below ``count`` are never rewritten (the
    writer appends past the committed end, and compaction writes a new file), so a view
    stays valid while later rows are added, and a reallocation leaves old views on the old
    array."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.ino = _inode(path)  # a file replaced under the same name gets a new buffer
        self.data = np.empty((0, dim), dtype=np.float32)
        self.count = 0
        self.crc = 0  # CRC-32 of the bytes of rows [0, count)
        self.lock = threading.Lock()

    def extend_to(self, n_rows: int, name: str, expected_crc: int | None) -> np.ndarray:
        """Read rows up to ``n_rows``, check them, and return the view ``data[:n_rows]``."""
        with self.lock:
            if n_rows < self.count:
                raise IndexDamaged(name, f"{self.path.name} went back from {self.count} to {n_rows} rows")
            new = n_rows - self.count
            crc = self.crc
            if new:
                block = np.empty((new, self.dim), dtype=np.float32)
                crc = _read_into(
                    self.path, self.count * self.dim * 4, block, n_rows * self.dim * 4, name, crc
                )
                if not np.isfinite(block).all():
                    bad = self.count + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                    raise IndexDamaged(name, f"row {bad} of {self.path.name} holds NaN or infinite values")
            if expected_crc is not None and crc != expected_crc:
                raise IndexDamaged(
                    name,
                    f"{self.path.name} fails its checksum (CRC-32 {crc:08x}, recorded {expected_crc:08x})",
                )
            if new:
                if n_rows > len(self.data):
                    grown = np.empty(
                        (max(n_rows, int(len(self.data) * 1.5)) if self.count else n_rows, self.dim),
                        dtype=np.float32,
                    )
                    grown[: self.count] = self.data[: self.count]
                    self.data = grown
                self.data[self.count : n_rows] = block
                self.count, self.crc = n_rows, crc
            return self.data[:n_rows]


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _read_into(path: Path, offset: int, out: np.ndarray, need: int, name: str, crc: int) -> int:
    """Fill ``out`` from ``path`` at ``offset`` (the file must hold ``need`` bytes); the CRC continued."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size < need:
                raise IndexDamaged(name, f"{path.name} has {size} bytes; the committed rows need {need}")
            f.seek(offset)
            view = out.data.cast("B")
            got = 0
            while got < len(view):
                n = f.readinto(view[got : got + READ_STEP])
                if not n:
                    raise IndexDamaged(
                        name, f"{path.name} was cut short while it was read ({offset + got} of {need} bytes)"
                    )
                crc = zlib.crc32(view[got : got + n], crc)
                got += n
    except FileNotFoundError:
        raise IndexDamaged(name, f"the vector file {path.name} is missing") from None
    except OSError as exc:
        raise IndexDamaged(name, f"{path.name} cannot be read ({exc.strerror or exc})") from None
    return crc


class FlatVectors:
    """The rows of one vector file generation, read-only, as of one committed state."""

    def __init__(
        self,
        path: Path | None,
        n_rows: int,
        dim: int,
        previous: FlatVectors | None = None,
        *,
        name: str = "index",
        crc: int | None = None,
    ) -> None:
        self.path = path
        self.n_rows = n_rows
        self.dim = dim
        self.name = name
        self.matrix: np.ndarray | None = None
        self.half: Any = None  # torch float16 tensor [n_rows, dim] once built
        self.ready = threading.Event()
        self._started = False
        self._previous = previous
        self.buffer: RowBuffer | None = None
        if previous is not None:
            previous._previous = (
                None  # keep one generation back (for its float16 copy), not a chain of every commit
            )
        if path is None or not n_rows or not dim:
            self.ready.set()
            return
        prev = previous.buffer if previous is not None else None
        self.buffer = (
            prev
            if prev is not None
            and prev.path == path
            and prev.dim == dim
            and prev.count <= n_rows
            and prev.ino == _inode(path)
            else RowBuffer(path, dim)
        )
        self.matrix = self.buffer.extend_to(n_rows, name, crc)
        if n_rows * dim < HALF_FROM:
            self.ready.set()
            self._previous = None

    def check(self) -> None:
        """The file still holds the committed rows (one ``os.stat``): ``IndexDamaged`` if not."""
        if self.path is None or not self.n_rows:
            return
        need = self.n_rows * self.dim * 4
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            raise IndexDamaged(self.name, f"the vector file {self.path.name} is missing") from None
        if size < need:
            raise IndexDamaged(
                self.name, f"{self.path.name} has {size} bytes; the committed rows need {need}"
            )

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
            reuse = (
                prev is not None
                and prev.half is not None
                and prev.path == self.path
                and prev.n_rows <= self.n_rows
            )
            parts = [prev.half] if prev is not None and reuse else []
            for i in range(prev.n_rows if prev is not None and reuse else 0, self.n_rows, STEP):
                parts.append(
                    torch.from_numpy(np.array(self.matrix[i : min(i + STEP, self.n_rows)])).to(torch.float16)
                )
            self.half = parts[0] if len(parts) == 1 else torch.cat(parts)
        finally:
            self._previous = None
            self.ready.set()

    def top_k(
        self, q: np.ndarray, k: int, *, rows: np.ndarray | None = None, dead: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
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
