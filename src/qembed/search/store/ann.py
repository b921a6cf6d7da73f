"""Approximate nearest-neighbour search over the embedded store's vector rows (usearch HNSW).

Why an ANN index at all: the flat scan reads every row per query (1M x 1024 float32 rows
are 4 GB: hundreds of ms on 2 cores). An HNSW graph visits a few thousand rows instead.
Why usearch (measured in bench/results/search-ann/): on this machine it built the graph
fastest, stores its copy of the vectors as int8 (a quarter of float32) with recall held by
re-scoring the candidates from the exact float32 rows, and saves/loads one file.

How it stays correct with the store (``embedded.py``):

- the graph's keys are vector-row numbers of one vector file generation; it *covers* rows
  ``[0, rows)``, a prefix of the committed rows, and records their running CRC-32, which is
  the same running CRC the store records with every commit (``store.vector_crc32``). A graph
  therefore never claims rows that are not committed: it is only ever fed committed rows,
  and on load its header is compared with the committed state (file generation, rows <=
  committed rows, the CRC of that prefix). A missing, damaged or stale sidecar is rebuilt
  or caught up from the vector file, never trusted;
- deleted chunks leave their rows in the graph; every search maps rows to live chunks
  through the snapshot (``row_to_id``), so a deleted chunk can never come back;
- candidates are re-scored with the float32 rows, so scores are exact and the ranking of
  what was found is the exact one; rows past ``rows`` (committed since the graph was last
  caught up) are scanned exactly and merged, so new chunks are found at once.

The sidecar is two files: ``ann-<token>.usearch`` (the graph) and ``ann.json`` (what it
covers, its size and CRC), switched by an atomic rename of ``ann.json``; a reader that finds
the pair inconsistent rebuilds.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qembed.errors import InputError

log = logging.getLogger("qembed.search.ann")

HEADER = "ann.json"
FORMAT = 1
CONNECTIVITY = 32  # HNSW M: edges per node (memory ~ 2 x M x 4 bytes per row, plus the vectors)
EXPANSION_ADD = 200  # ef_construction
EXPANSION_SEARCH = 1024  # ef at query time (raised for larger fetches): random 1024-d rows need it
DTYPE = "i8"  # the graph's copy of the vectors; exact float32 rows re-score the candidates
ADD_STEP = 4096  # rows added per lock hold: searches wait at most one step
FETCH = 10  # candidates asked of the graph per result wanted (re-scored exactly)
MAX_FETCH = 4096
SAVE_MIN = 4096  # rows a graph must have grown by before it is saved again
MODES = ("auto", "on", "off")


def available() -> bool:
    """usearch is installed (the ``ann`` extra)."""
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def _new_index(dim: int, dtype: str) -> Any:
    from usearch.index import Index

    return Index(
        ndim=dim,
        metric="ip",
        dtype=dtype,
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )


class AnnIndex:
    """An HNSW graph over rows ``[0, rows)`` of one vector file, with what it covers.

    Thread-safety: ``add`` and ``search`` take ``lock``; ``add`` holds it for one step of
    ``ADD_STEP`` rows, so a background catch-up delays a query by at most one step."""

    def __init__(self, vector_file: str, dim: int, *, dtype: str = DTYPE) -> None:
        self.vector_file = vector_file
        self.dim = dim
        self.dtype = dtype
        self.rows = 0  # rows [0, rows) are in the graph (dead ones included)
        self.crc = 0  # running CRC-32 of those rows' float32 bytes
        self.saved_rows = 0  # rows covered by the sidecar on disk
        self.lock = threading.Lock()
        self.ino: int | None = None  # the vector file's inode when the graph was started
        self.index = _new_index(dim, dtype)

    # -- building --------------------------------------------------------------------------
    def add(self, start: int, vectors: np.ndarray, *, threads: int = 0) -> None:
        """Add rows ``start .. start + len(vectors)``; they must continue the covered prefix."""
        if start != self.rows:
            raise InputError(f"ANN rows must be added in order: have {self.rows}, got {start}.")
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        for i in range(0, len(v), ADD_STEP):
            part = v[i : i + ADD_STEP]
            keys = np.arange(start + i, start + i + len(part), dtype=np.uint64)
            with self.lock:
                self.index.add(keys, part, threads=threads)
                self.rows += len(part)
                self.crc = zlib.crc32(part.data.cast("B"), self.crc)

    def catch_up(
        self,
        read: Callable[[int, int], np.ndarray],
        n_rows: int,
        *,
        stop: threading.Event | None = None,
        threads: int = 0,
    ) -> None:
        """Add rows ``[rows, n_rows)`` read with ``read(start, stop)``, in steps (``stop`` ends early)."""
        while self.rows < n_rows and not (stop is not None and stop.is_set()):
            end = min(n_rows, self.rows + ADD_STEP)
            self.add(self.rows, read(self.rows, end), threads=threads)

    # -- searching ---------------------------------------------------------------------------
    def search(self, q: np.ndarray, count: int, ef: int | None = None) -> np.ndarray:
        """Up to ``count`` candidate rows (approximate; the caller re-scores them exactly)."""
        with self.lock:
            if not self.rows:
                return np.zeros(0, dtype=np.int64)
            self.index.expansion_search = max(ef or EXPANSION_SEARCH, count)
            keys = self.index.search(q, min(count, self.rows)).keys
        return np.asarray(keys, dtype=np.int64)

    # -- sidecar -----------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the graph and then ``ann.json`` (atomic rename); older graph files go."""
        with self.lock:
            rows, crc = self.rows, self.crc
            token = secrets.token_hex(6)
            data = folder / f"ann-{token}.usearch"
            self.index.save(str(data))
        fd = os.open(data, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        header = {
            "format": FORMAT,
            "library": "usearch",
            "library_version": _usearch_version(),
            "file": data.name,
            "file_bytes": data.stat().st_size,
            "file_crc32": _crc_file(data),
            "vector_file": self.vector_file,
            "dim": self.dim,
            "dtype": self.dtype,
            "connectivity": CONNECTIVITY,
            "rows": rows,
            "rows_crc32": crc,
        }
        tmp = folder / f".{HEADER}.{token}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(header, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / HEADER)
        _fsync_dir(folder)
        self.saved_rows = rows
        for old in folder.glob("ann-*.usearch"):
            if old.name != data.name:
                old.unlink(missing_ok=True)

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        vector_file: str,
        dim: int,
        committed_rows: int,
        committed_crc: int | None,
        prefix_crc: Callable[[int], int],
    ) -> tuple[AnnIndex | None, str]:
        """The sidecar if it matches the committed state, else ``(None, why not)``.

        ``prefix_crc(rows)`` is the CRC-32 of the first ``rows`` committed rows (asked only
        when the sidecar covers fewer rows than are committed)."""
        try:
            header = json.loads((folder / HEADER).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, "no ANN sidecar"
        except (OSError, ValueError) as exc:
            return None, f"{HEADER} cannot be read ({exc})"
        try:
            rows = int(header["rows"])
            if header.get("format") != FORMAT or header.get("library") != "usearch":
                return None, "the ANN sidecar has another format"
            if header["vector_file"] != vector_file or int(header["dim"]) != dim:
                return None, "the ANN sidecar is for another vector file generation"
            if rows > committed_rows:
                return None, f"the ANN sidecar covers {rows} rows, only {committed_rows} are committed"
            want = committed_crc if rows == committed_rows and committed_crc is not None else None
            if want is None:
                want = prefix_crc(rows)
            if int(header["rows_crc32"]) != want:
                return None, "the ANN sidecar's rows do not match the vector file's (checksum)"
            data = folder / str(header["file"])
            if data.parent != folder or not data.exists():
                return None, f"the ANN graph file {data.name} is missing"
            if data.stat().st_size != int(header["file_bytes"]) or _crc_file(data) != int(
                header["file_crc32"]
            ):
                return None, f"the ANN graph file {data.name} is damaged (size or checksum)"
            ann = cls(vector_file, dim, dtype=str(header["dtype"]))
            ann.index.load(str(data))
            if len(ann.index) != rows:
                return None, f"the ANN graph holds {len(ann.index)} rows, its header says {rows}"
        except (KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
            return None, f"the ANN sidecar cannot be used ({exc})"
        ann.rows, ann.crc, ann.saved_rows = rows, int(header["rows_crc32"]), rows
        return ann, "loaded"

    def memory_bytes(self) -> int:
        return int(self.index.memory_usage)


@dataclass(frozen=True)
class Committed:
    """The committed state a graph is checked against (from one snapshot or one commit)."""

    vector_file: str
    generation: int
    dim: int
    rows: int
    crc: int | None
    live: int


class AnnManager:
    """One store's graph: loaded from the sidecar or built, caught up in a background thread,
    saved when it has grown, and dropped when it no longer matches the committed rows.

    ``state()`` reads the committed state; ``prefix_crc(generation, rows)`` the CRC the store
    recorded when ``rows`` rows were committed (``None`` if not recorded); ``read(file, a, b)``
    the committed float32 rows ``[a, b)`` of a vector file."""

    def __init__(
        self,
        folder: Path,
        name: str,
        *,
        mode: str,
        threshold: int,
        ef: int | None = None,
        state: Callable[[], Committed | None],
        prefix_crc: Callable[[int, int], int | None],
        read: Callable[[str, int, int], np.ndarray],
    ) -> None:
        if mode not in MODES:
            raise InputError(f"ann must be one of {', '.join(MODES)}, got {mode!r}.", param="ann")
        if mode == "on" and not available():
            raise InputError("ann='on' needs usearch: pip install 'qembed-server[ann]'.", param="ann")
        self.folder, self.name, self.mode, self.threshold = folder, name, mode, max(0, threshold)
        self.ef = max(16, ef or EXPANSION_SEARCH)  # search width: recall against latency
        self._state, self._prefix_crc, self._read = state, prefix_crc, read
        self.ann: AnnIndex | None = None
        self.why = "not used yet"
        self.answered = 0  # searches the graph answered (the others were exact)
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failed: str | None = None
        self._saving = threading.Lock()

    def wanted(self, live: int) -> bool:
        """Whether an index of ``live`` chunks is searched through the graph."""
        if self.mode == "off" or self._failed is not None:
            return False
        if self.mode == "on":
            return True
        return live >= self.threshold and available()

    # -- the graph for a committed state -------------------------------------------------------
    def current(self, c: Committed) -> AnnIndex | None:
        """The graph for ``c`` (loaded or started the first time), and a catch-up started if
        it lags. ``None`` when there is none to use yet."""
        with self.lock:
            ann = self._matching(c)
            if ann is None:
                ann = self._load(c)
                self.ann = ann
            if ann.rows < c.rows:
                self._kick()
            return ann

    def _matching(self, c: Committed) -> AnnIndex | None:
        """The graph in memory if it is of ``c``'s vector file and agrees with its rows."""
        ann = self.ann
        if ann is None:
            return None
        if ann.vector_file != c.vector_file or ann.dim != c.dim or ann.rows > c.rows:
            self.why = "the vector file changed (compaction or rebuild): graph rebuilt"
            return None
        if ann.ino != _inode(self.folder / c.vector_file):
            self.why = "the vector file was replaced: graph rebuilt"
            return None
        if ann.rows == c.rows and c.crc is not None and ann.crc != c.crc:
            self.why = "the graph's rows do not match the committed rows (checksum): graph rebuilt"
            return None
        return ann

    def _load_sidecar(self, c: Committed) -> tuple[AnnIndex | None, str]:
        """The sidecar on disk checked against ``c`` (``AnnIndex.load``), or why it cannot serve."""

        def prefix(rows: int) -> int:
            crc = self._prefix_crc(c.generation, rows)
            if crc is None:  # not a recorded commit boundary: read the prefix
                crc = _crc_file(self.folder / c.vector_file, rows * c.dim * 4)
            return crc

        return AnnIndex.load(
            self.folder,
            vector_file=c.vector_file,
            dim=c.dim,
            committed_rows=c.rows,
            committed_crc=c.crc,
            prefix_crc=prefix,
        )

    def check_sidecar(self) -> str | None:
        """What ``qembed index --check`` says of the graph on disk: ``None`` when there is none
        and none is wanted; otherwise one line. A sidecar that does not match the committed
        rows is never an error (the next store that uses the graph rebuilds or catches it up from the vector file),
        but it costs that rebuild, so the check says so."""
        c = self._state()
        has_sidecar = (self.folder / HEADER).exists()
        if c is None or (not has_sidecar and not self.wanted(c.live)):
            return None
        if not has_sidecar:
            return f"ANN graph: none on disk yet (built from the vector file when the graph is next used: {c.rows} rows)"
        if not available():
            return "ANN graph: a sidecar is on disk but usearch is not installed (pip install 'qembed-server[ann]')"
        ann, why = self._load_sidecar(c)
        if ann is None:
            return f"ANN graph: {why}; it is rebuilt from the vector file when the graph is next used ({c.rows} rows)"
        lag = c.rows - ann.rows
        caught = f", {lag} newer rows caught up when the graph is next used" if lag else ""
        return f"ANN graph: ok (covers {ann.rows} of {c.rows} committed rows, size and checksums checked{caught})"

    def _load(self, c: Committed) -> AnnIndex:
        ann, why = self._load_sidecar(c)
        if ann is None:
            log.info("index %r: %s; building the ANN graph from the vector file", self.name, why)
            self.why = f"{why}: built from the vector file"
            ann = AnnIndex(c.vector_file, c.dim)
        else:
            self.why = "sidecar loaded"
        ann.ino = _inode(self.folder / c.vector_file)
        return ann

    # -- catching up ----------------------------------------------------------------------------
    def _kick(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="qembed-ann", daemon=True)
        self._thread.start()

    def after_commit(self, live: int) -> None:
        """A commit happened in this process: catch the graph up in the background if it is used."""
        if self.wanted(live):
            c = self._state()
            if c is not None and c.rows:
                self.current(c)

    def _run(self) -> None:
        try:
            self.sync(stop=self._stop)
        except Exception as exc:  # noqa: BLE001 - a failed graph means exact search, never a crash
            self._failed = f"{type(exc).__name__}: {exc}"
            self.why = f"ANN disabled for this process: {self._failed}"
            log.warning("index %r: %s", self.name, self.why)

    def sync(self, *, stop: threading.Event | None = None, save: bool = True) -> AnnIndex | None:
        """Catch the graph up with the committed rows (until ``stop``), then save it if it grew
        enough since the sidecar was written (or ``save`` and it is complete)."""
        while not (stop is not None and stop.is_set()):
            c = self._state()
            if c is None or not c.rows:
                return None
            with self.lock:
                ann = self._matching(c) or self._load(c)
                self.ann = ann
            if ann.rows >= c.rows:
                break
            file = c.vector_file

            def read(a: int, b: int, file: str = file) -> np.ndarray:
                return self._read(file, a, b)

            ann.catch_up(read, c.rows, stop=stop)
            if ann.rows == c.rows and c.crc is not None and ann.crc != c.crc:
                with self.lock:
                    self.ann = None
                raise RuntimeError("the rows read for the ANN graph do not match the committed checksum")
        if save:
            self.save_if_grown()
        return self.ann

    def save_if_grown(self) -> None:
        """Save the graph when it grew by a tenth (at least ``SAVE_MIN`` rows) since the sidecar."""
        ann = self.ann
        if ann is not None and ann.rows - ann.saved_rows >= max(ann.rows // 10, SAVE_MIN):
            self.save()

    def save(self) -> None:
        ann = self.ann
        if ann is None or not ann.rows or ann.rows == ann.saved_rows:
            return
        from filelock import FileLock

        with self._saving, FileLock(str(self.folder / "ann.lock")):
            ann.save(self.folder)

    def finish(self) -> None:
        """Bring the graph up to date and save it (end of a writer's run); the caller waits."""
        self.close()
        if self.ann is not None or self.mode == "on":
            self.sync(save=False)
            self.save()

    def close(self) -> None:
        """Stop the catch-up at its next step (the graph in memory stays valid)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()
        self._thread = None

    def describe(self) -> dict[str, Any]:
        ann = self.ann
        return {
            "mode": self.mode,
            "threshold": self.threshold,
            "ef": self.ef,
            "rows": ann.rows if ann else 0,
            "saved_rows": ann.saved_rows if ann else 0,
            "answered": self.answered,
            "state": self.why,
        }


def top_k(
    ann: AnnIndex,
    matrix: np.ndarray,
    n_rows: int,
    q: np.ndarray,
    k: int,
    allowed: np.ndarray,
    eligible: int,
    ef: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, exact scores) of the k best rows among ``allowed`` (a bool mask over the
    ``n_rows`` committed rows: live and matching the filters; ``eligible`` of them), or
    ``None`` when the graph found too few of them and the caller must search exactly.

    The graph is asked for ``k`` times an over-fetch factor (more when only a fraction of
    its rows is allowed), rows past the graph are scanned exactly, and every candidate is
    re-scored from the float32 rows."""
    covered = min(ann.rows, n_rows)
    fraction = max(eligible / max(n_rows, 1), 1e-9)  # share of the rows a candidate may be
    fetch = int(min(MAX_FETCH, max(FETCH * k, FETCH * k / fraction)))
    cands = ann.search(q, fetch, ef) if covered else np.zeros(0, dtype=np.int64)
    cands = cands[(cands >= 0) & (cands < covered)]
    cands = cands[allowed[cands]]
    if covered < n_rows:
        tail = np.arange(covered, n_rows, dtype=np.int64)
        cands = np.concatenate([cands, tail[allowed[covered:n_rows]]])
    want = min(k, eligible)
    if len(cands) < want:
        return None
    scores = matrix[cands] @ q
    order = np.lexsort((cands, -scores))[:k]
    return cands[order], scores[order]


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def remove_sidecar(folder: Path) -> None:
    """Delete the sidecar (header first, so no reader pairs it with a half-deleted graph)."""
    (folder / HEADER).unlink(missing_ok=True)
    for f in folder.glob("ann-*.usearch"):
        f.unlink(missing_ok=True)


def _crc_file(path: Path, nbytes: int | None = None) -> int:
    """CRC-32 of the first ``nbytes`` of ``path`` (all of it when ``None``)."""
    crc = 0
    left = nbytes
    with open(path, "rb", buffering=0) as f:
        while left is None or left > 0:
            data = f.read(1 << 24 if left is None else min(left, 1 << 24))
            if not data:
                if left:
                    raise OSError(f"{path.name} ends {left} bytes early")
                break
            crc = zlib.crc32(data, crc)
            if left is not None:
                left -= len(data)
    return crc


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _usearch_version() -> str:
    try:
        import usearch

        return str(usearch.__version__)
    except (ImportError, AttributeError):
        return "?"
