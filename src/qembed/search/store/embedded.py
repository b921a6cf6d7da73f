"""The default store: one folder, no server. SQLite for chunks, documents and BM25 (FTS5);
a flat file of float32 rows for the vectors, searched exactly with one matrix-vector product.

Why this design (measured in docs/SEARCH.md, bench/search_store.py): at 100k chunks x 1024
dims on 2 cores a brute-force product over the rows (read into memory: flat.py) answers in tens of ms with
exact results, no index to build or tune, and inserts are appends; Milvus Lite took seconds
per query and LanceDB without an index about a second at that size.

Durability: every ``write`` is one SQLite transaction (WAL, synchronous=FULL). Vectors are
written *before* the commit into rows past ``store.next_row`` and fsynced; only the commit
makes them reachable (it inserts the chunk rows that point at them and advances
``next_row``). A process killed at any moment therefore leaves either the old state or the
new one; rows written by a transaction that never committed are overwritten by the next
writer. Deleted chunks leave dead rows, which ``compact`` rewrites into a new file
generation when they outnumber the live ones. Writers are serialised by SQLite's write
lock (``BEGIN IMMEDIATE``), so several processes may share a folder; readers notice other
processes' commits through ``PRAGMA data_version``. Whole indexing runs take the folder's
writer lock (``writer()``, ``store/lock.py``) so two runs never both embed everything.

Integrity (``flat.py`` reads the rows): each commit records, with ``next_row``, the running
CRC-32 of the committed rows (``store.vector_crc32``); a reader checks the file's size and
that checksum for every row it loads, and the size again on every search. A short or
corrupted vector file, a missing one, or a corrupt SQLite file raises ``IndexDamaged``
(naming the index and ``qembed index --rebuild``); ``check(full=True)`` (``qembed index
--check``) also runs SQLite's ``quick_check``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import zlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from qembed.common.sqlite import connect_wal, open_lock_path
from qembed.errors import IndexBusy, IndexDamaged, InputError, InternalError, NotFound
from qembed.search import bm25
from qembed.search.documents import Chunk
from qembed.search.ingest import STORE_MARKER
from qembed.search.store.ann import AnnManager, Committed
from qembed.search.store.ann import top_k as ann_top_k
from qembed.search.store.base import (
    DocumentUpdate,
    Filters,
    Hit,
    Store,
    StoreStats,
    check_update_vectors,
    dumps,
    normalize_rows,
)
from qembed.search.store.flat import FlatVectors, crc_of_file
from qembed.search.store.lock import (
    DEFAULT_TIMEOUT,
    HOLDER_FILE,
    LOCK_FILE,
    WriterLock,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    doc_id TEXT PRIMARY KEY, doc_hash TEXT NOT NULL, path TEXT NOT NULL,
    n_chunks INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
    path TEXT NOT NULL, title TEXT NOT NULL, heading TEXT NOT NULL,
    line_start INTEGER NOT NULL, line_end INTEGER NOT NULL,
    language TEXT NOT NULL, file_type TEXT NOT NULL,
    text TEXT NOT NULL, context TEXT NOT NULL, content_hash TEXT NOT NULL, metadata TEXT NOT NULL,
    vec_row INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, ordinal);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(content_hash);
CREATE INDEX IF NOT EXISTS chunks_language ON chunks(language);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(terms, tokenize = 'unicode61');
CREATE TABLE IF NOT EXISTS vector_log(
    generation INTEGER NOT NULL, rows INTEGER NOT NULL, crc INTEGER NOT NULL,
    PRIMARY KEY (generation, rows));
"""
COLUMNS = "id, chunk_id, doc_id, ordinal, path, title, heading, line_start, line_end, language, file_type, text, context, metadata"
INTERNAL = "store."  # meta keys owned by the store, not shown by get_meta
# SQLite result codes that mean the file is damaged, not busy: the index needs a rebuild.
DAMAGE_CODES = {
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_FORMAT,
}
SQL_BATCH = 500
log = logging.getLogger("qembed.search.store")
ANN_THRESHOLD = 50_000  # live chunks from which ann="auto" searches through the graph
ANN_FILTER_EXACT_BELOW = 0.02  # a filter keeping fewer live rows than this share: exact over them


def _row_to_chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(
        chunk_id=row[1],
        doc_id=row[2],
        ordinal=row[3],
        path=row[4],
        title=row[5],
        heading=tuple(json.loads(row[6])),
        line_start=row[7],
        line_end=row[8],
        language=row[9],
        file_type=row[10],
        text=row[11],
        context=row[12],
        metadata=json.loads(row[13]),
    )


def _batches(items: Sequence[Any], size: int = SQL_BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def filter_sql(filters: Filters | None, alias: str = "c") -> tuple[str, list[Any]]:
    """A WHERE fragment (starting with AND) and its parameters."""
    if filters is None or filters.empty:
        return "", []
    parts, params = [], []
    if filters.path_prefix:
        parts.append(f"substr({alias}.path, 1, ?) = ?")
        params += [len(filters.path_prefix), filters.path_prefix]
    if filters.language:
        parts.append(f"{alias}.language = ?")
        params.append(filters.language.lower())
    if filters.file_type:
        parts.append(f"{alias}.file_type = ?")
        params.append(filters.normalized_file_type())
    return " AND " + " AND ".join(parts), params


class _Snapshot:
    """What a search needs from one committed state: the vectors, which rows are live, and
    the filterable fields of the live rows (so filters cost a numpy mask, not a SQL scan)."""

    def __init__(
        self,
        folder: Path,
        file: str | None,
        n_rows: int,
        dim: int,
        live: list[tuple[Any, ...]],
        previous: _Snapshot | None,
        *,
        name: str = "index",
        crc: int | None = None,
    ) -> None:
        self.n_rows = n_rows
        self.dim = dim
        self.file = file
        self.crc = crc
        live = sorted(live, key=lambda r: r[1])
        ids = np.array([r[0] for r in live], dtype=np.int64)
        self.rows = np.array([r[1] for r in live], dtype=np.int64)
        self.language = np.array([r[2] for r in live], dtype=object)
        self.file_type = np.array([r[3] for r in live], dtype=object)
        self.path = [r[4] for r in live]
        self.row_to_id = np.full(n_rows, -1, dtype=np.int64)
        if self.rows.size:
            self.row_to_id[self.rows] = ids
        self.dead = self.row_to_id < 0
        self.alive = ~self.dead
        self.live = int(self.rows.size)
        if any(not 0 <= r < n_rows for r in (self.rows[:1].tolist() + self.rows[-1:].tolist())):
            raise IndexDamaged(name, f"chunks point at vector rows outside the {n_rows} committed ones")
        self.vectors: FlatVectors = FlatVectors(
            folder / file if file else None,
            n_rows,
            dim,
            previous.vectors if previous else None,
            name=name,
            crc=crc,
        )

    def filtered_rows(self, filters: Filters) -> np.ndarray:
        mask = np.ones(self.live, dtype=bool)
        if filters.language:
            mask &= self.language == filters.language.lower()
        if filters.file_type:
            mask &= self.file_type == filters.normalized_file_type()
        if filters.path_prefix:
            prefix = filters.path_prefix
            mask &= np.fromiter((p.startswith(prefix) for p in self.path), dtype=bool, count=self.live)
        return self.rows[mask]


class EmbeddedStore(Store):
    kind = "embedded"

    def __init__(
        self,
        folder: str | os.PathLike[str],
        name: str | None = None,
        *,
        create: bool = True,
        ann: str = "off",
        ann_threshold: int = ANN_THRESHOLD,
        ann_ef: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.name = name or self.folder.name
        if not self.folder.is_dir():
            if not create:
                raise NotFound(
                    f"no index {self.name!r} in {self.folder.parent} (build it with `qembed index PATH --index {self.name}`).",
                    param="index",
                )
            self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / STORE_MARKER
        if not marker.exists():
            marker.write_text(
                "qembed embedded search store: SQLite + float32 vector file. Do not edit by hand.\n"
            )
        elif any(self.folder.glob("vectors-*.f32")) and not _has_database(self.folder):
            # An emptied or deleted SQLite file would silently open as a new, empty index.
            raise IndexDamaged(self.name, "index.sqlite is missing or empty but vector files are there")
        self.writer_lock = WriterLock(self.folder, self.name)
        self.lock = threading.RLock()
        self._version: int | None = None
        self._dirty = True
        self._snap: _Snapshot | None = None
        self._damage: tuple[Any, IndexDamaged] | None = None  # (state it was seen in, the error)
        path = self.folder / "index.sqlite"
        try:
            self.db = connect_wal(
                path, timeout=120, synchronous="FULL", isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        except TimeoutError as exc:
            raise IndexBusy(f"index {self.name!r}: {exc}") from None
        with self._write():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
        self.ann = AnnManager(
            self.folder,
            self.name,
            mode=ann,
            threshold=ann_threshold,
            ef=ann_ef,
            state=self._committed,
            prefix_crc=self._logged_crc,
            read=self._read_rows,
        )
        self._wrote = False

    def _damaged(self, exc: sqlite3.DatabaseError) -> Exception:
        """A SQLite error as ``IndexDamaged`` when it means a damaged file; others as they are."""
        code = getattr(exc, "sqlite_errorcode", None)
        if (
            code is not None
            and (code & 0xFF) in DAMAGE_CODES
            or "malformed" in str(exc)
            or "not a database" in str(exc)
        ):
            return IndexDamaged(self.name, f"index.sqlite: {exc}")
        return exc

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise self._damaged(exc) from None
            self._dirty = True

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            try:
                self.db.execute("BEGIN")
                try:
                    yield self.db
                finally:
                    if self.db.in_transaction:
                        self.db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise self._damaged(exc) from None

    # -- one writer per index, integrity ------------------------------------------------------
    def writer(self, timeout: float = DEFAULT_TIMEOUT, what: str | None = None) -> Any:
        """Hold the index's writer lock for a whole run (``IndexBusy`` after ``timeout`` s)."""
        return self.writer_lock.hold(timeout, what)

    def check(self, *, full: bool = False, load: bool = True) -> None:
        """Raise ``IndexDamaged`` if the index fails its checks: the committed rows loaded and
        checksummed (cached until the next commit), the file's size now; ``full`` also
        re-reads the vector file's checksum from disk and runs SQLite's ``quick_check``;
        ``load=False`` checks only the file's size (a writer that needs no rows in memory)."""
        if not load and not full:
            with self._read() as db:
                internal = self._internal(db)
            if internal.get("vector_file") and int(internal.get("next_row", 0) or 0):
                self._check_size(
                    internal["vector_file"], int(internal["next_row"]), int(internal["dimension"])
                )
            return
        snap = self._snapshot()
        snap.vectors.check()
        if not full:
            return
        with self._read() as db:
            problems = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
            internal = self._internal(db)
        if problems != ["ok"]:
            raise IndexDamaged(
                self.name, f"index.sqlite fails SQLite's quick_check ({'; '.join(problems[:3])})"
            )
        if internal.get("vector_crc32") and snap.vectors.path is not None and snap.n_rows:
            try:
                crc = crc_of_file(snap.vectors.path, snap.n_rows * snap.dim * 4)
            except OSError as exc:
                raise IndexDamaged(self.name, f"{snap.vectors.path.name} cannot be read ({exc})") from None
            if crc != int(internal["vector_crc32"]):
                raise IndexDamaged(self.name, f"{snap.vectors.path.name} fails its checksum on disk")

    def _internal(self, db: sqlite3.Connection) -> dict[str, str]:
        rows = db.execute("SELECT key, value FROM meta WHERE key LIKE 'store.%'").fetchall()
        return {k[len(INTERNAL) :]: v for k, v in rows}

    def _set_internal(self, db: sqlite3.Connection, values: dict[str, Any]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [(INTERNAL + k, str(v)) for k, v in values.items()],
        )

    # -- meta -----------------------------------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        with self._read() as db:
            return dict(db.execute("SELECT key, value FROM meta WHERE key NOT LIKE 'store.%'").fetchall())

    def set_meta(self, values: dict[str, str]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, str(v)) for k, v in values.items() if not k.startswith(INTERNAL)],
            )

    @property
    def dimension(self) -> int | None:
        with self._read() as db:
            value = self._internal(db).get("dimension")
        return int(value) if value else None

    # -- snapshot for searching -----------------------------------------------------------------
    def _snapshot(self) -> _Snapshot:
        with self.lock:
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
            if self._snap is not None and not self._dirty and version == self._version:
                return self._snap
            state = (version, self._file_state())
            if self._damage is not None and not self._dirty and self._damage[0] == state:
                raise self._damage[1]  # the same damaged state: do not re-read the file for each /ready
            with self._read() as db:
                internal = self._internal(db)
                live = db.execute("SELECT id, vec_row, language, file_type, path FROM chunks").fetchall()
            n_rows = int(internal.get("next_row", 0))
            dim = int(internal.get("dimension", 0) or 0)
            crc = int(internal["vector_crc32"]) if internal.get("vector_crc32") else None
            try:
                self._snap = _Snapshot(
                    self.folder,
                    internal.get("vector_file"),
                    n_rows,
                    dim,
                    live,
                    self._snap,
                    name=self.name,
                    crc=crc,
                )
            except IndexDamaged as exc:
                self._damage, self._dirty = (state, exc), False
                raise
            self._damage = None
            self._version, self._dirty = version, False
            return self._snap

    def _file_state(self) -> tuple[Any, ...]:
        out = []
        for f in sorted(self.folder.glob("vectors-*.f32")):
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((f.name, st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(out)

    def _fetch(self, ids: Sequence[int]) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        with self._read() as db:
            for part in _batches(list(ids)):
                marks = ",".join("?" * len(part))
                for row in db.execute(f"SELECT {COLUMNS} FROM chunks WHERE id IN ({marks})", list(part)):
                    out[row[0]] = _row_to_chunk(row)
        return out

    # -- incremental indexing -------------------------------------------------------------------
    def doc_hashes(self, prefix: str = "") -> dict[str, str]:
        with self._read() as db:
            if not prefix:
                return dict(db.execute("SELECT doc_id, doc_hash FROM docs").fetchall())
            return dict(
                db.execute(
                    "SELECT doc_id, doc_hash FROM docs WHERE doc_id >= ? AND doc_id < ?",
                    (prefix, prefix + "\U0010ffff"),
                ).fetchall()
            )

    def vectors_for(self, content_hashes: Collection[str]) -> dict[str, np.ndarray]:
        hashes = list(dict.fromkeys(content_hashes))
        if not hashes:
            return {}
        found: dict[str, int] = {}
        with self._read() as db:
            internal = self._internal(db)
            for part in _batches(hashes):
                marks = ",".join("?" * len(part))
                found.update(
                    db.execute(
                        f"SELECT content_hash, vec_row FROM chunks WHERE content_hash IN ({marks})",
                        list(part),
                    ).fetchall()
                )
            if not found:
                return {}
            dim = int(internal["dimension"])
            rowbytes = dim * 4
            out: dict[str, np.ndarray] = {}
            try:
                fd = os.open(self.folder / internal["vector_file"], os.O_RDONLY)
            except FileNotFoundError:
                raise IndexDamaged(
                    self.name, f"the vector file {internal['vector_file']} is missing"
                ) from None
            try:
                for h, row in found.items():
                    data = os.pread(fd, rowbytes, row * rowbytes)
                    if len(data) != rowbytes:
                        raise IndexDamaged(self.name, f"{internal['vector_file']} ends before row {row}")
                    vec = np.frombuffer(data, dtype=np.float32).copy()
                    if not np.isfinite(vec).all():
                        raise IndexDamaged(
                            self.name, f"row {row} of {internal['vector_file']} holds NaN or infinite values"
                        )
                    out[h] = vec
            finally:
                os.close(fd)
        return out

    def write(self, updates: Sequence[DocumentUpdate], deletes: Sequence[str] = ()) -> None:
        if not updates and not deletes:
            return
        for u in updates:
            if len(u.chunks) != len(u.vectors):
                raise InternalError(
                    f"document {u.doc_id}: {len(u.chunks)} chunks but {len(u.vectors)} vectors"
                )
            check_update_vectors(u)
        with self._write() as db:
            internal = self._internal(db)
            dim = int(internal.get("dimension", 0) or 0)
            blocks = [u.vectors for u in updates if len(u.chunks)]
            if blocks and not dim:
                dim = int(np.asarray(blocks[0]).shape[1])
                self._set_internal(
                    db,
                    {
                        "dimension": dim,
                        "vector_file": "vectors-1.f32",
                        "next_row": 0,
                        "dead_rows": 0,
                        "generation": 1,
                    },
                )
                internal = self._internal(db)
            vectors = (
                normalize_rows(np.concatenate(blocks), dim) if blocks else np.zeros((0, dim), np.float32)
            )
            gone = [*dict.fromkeys([*(u.doc_id for u in updates), *deletes])]
            removed = 0
            for part in _batches(gone):
                marks = ",".join("?" * len(part))
                ids = [
                    r[0] for r in db.execute(f"SELECT id FROM chunks WHERE doc_id IN ({marks})", list(part))
                ]
                removed += len(ids)
                for id_part in _batches(ids):
                    db.execute(
                        f"DELETE FROM fts WHERE rowid IN ({','.join('?' * len(id_part))})", list(id_part)
                    )
                db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", list(part))
                db.execute(f"DELETE FROM docs WHERE doc_id IN ({marks})", list(part))
            next_row = int(internal.get("next_row", 0))
            crc = None
            if len(vectors):
                crc = self._committed_crc(internal, next_row, dim)
                self._append_vectors(internal["vector_file"], next_row, vectors)
                crc = zlib.crc32(vectors.tobytes(), crc)
            row = next_row
            now = time.time()
            # Ids are assigned here (we hold the write lock) so chunks and their FTS rows go in
            # with executemany; AUTOINCREMENT's counter keeps ids of deleted chunks unused.
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
            next_id = (seq[0] if seq else 0) + 1
            chunk_rows, fts_rows = [], []
            for u in updates:
                for c in u.chunks:
                    chunk_rows.append(
                        (next_id, c.chunk_id, c.doc_id, c.ordinal, c.path, c.title, json.dumps(list(c.heading), ensure_ascii=False),
                         c.line_start, c.line_end, c.language, c.file_type, c.text, c.context, dumps(c.metadata), c.content_hash, row)
                    )  # fmt: skip
                    fts_rows.append((next_id, " ".join(bm25.terms(c.embed_text))))
                    next_id += 1
                    row += 1
            db.executemany(
                f"INSERT INTO chunks({COLUMNS}, content_hash, vec_row) VALUES ({','.join('?' * 16)})",
                chunk_rows,
            )
            db.executemany("INSERT INTO fts(rowid, terms) VALUES (?, ?)", fts_rows)
            db.executemany(
                "INSERT INTO docs(doc_id, doc_hash, path, n_chunks, updated) VALUES (?, ?, ?, ?, ?)",
                [(u.doc_id, u.doc_hash, u.path, len(u.chunks), now) for u in updates],
            )
            if dim:
                values: dict[str, Any] = {
                    "next_row": row,
                    "dead_rows": int(internal.get("dead_rows", 0)) + removed,
                }
                if crc is not None:
                    values["vector_crc32"] = crc
                    db.execute(
                        "INSERT OR REPLACE INTO vector_log(generation, rows, crc) VALUES (?, ?, ?)",
                        (int(internal.get("generation", 1)), row, crc),
                    )
                self._set_internal(db, values)
        self._wrote = True
        snap_dead = self._dead_and_live()
        if snap_dead[0] > max(snap_dead[1], 1024):
            self.compact()
        self.ann.after_commit(snap_dead[1])

    def _committed_crc(self, internal: dict[str, str], next_row: int, dim: int) -> int:
        """The recorded CRC of the committed rows, after checking the file still holds them
        (appending past a cut-short file would leave a hole of zeros inside the index)."""
        path = self._check_size(internal["vector_file"], next_row, dim)
        need = next_row * dim * 4
        if internal.get("vector_crc32"):
            return int(internal["vector_crc32"])
        try:  # an index written before checksums: compute it once
            return crc_of_file(path, need) if need else 0
        except OSError as exc:
            raise IndexDamaged(self.name, f"{path.name} cannot be read ({exc})") from None

    def _check_size(self, file: str, next_row: int, dim: int) -> Path:
        """The vector file, after checking that it holds the ``next_row`` committed rows."""
        path = self.folder / file
        need = next_row * dim * 4
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = -1
        if need and size < 0:
            raise IndexDamaged(self.name, f"the vector file {path.name} is missing")
        if need and size < need:
            raise IndexDamaged(self.name, f"{path.name} has {size} bytes; the committed rows need {need}")
        return path

    def _append_vectors(self, file: str, start_row: int, vectors: np.ndarray) -> None:
        """Write rows at ``start_row`` and fsync; they become reachable only when the caller commits."""
        path = self.folder / file
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            data = vectors.tobytes()
            offset = start_row * vectors.shape[1] * 4
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            self._fsync_folder()

    def _fsync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _dead_and_live(self) -> tuple[int, int]:
        with self._read() as db:
            internal = self._internal(db)
            live = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(internal.get("dead_rows", 0)), int(live)

    def compact(self) -> None:
        """Rewrite the live vectors into a new file generation, dropping dead rows."""
        with self._write() as db:
            internal = self._internal(db)
            if not internal.get("vector_file"):
                return
            dim = int(internal["dimension"])
            generation = int(internal.get("generation", 1)) + 1
            new_file = f"vectors-{generation}.f32"
            rows = db.execute("SELECT id, vec_row FROM chunks ORDER BY vec_row").fetchall()
            n_rows = int(internal["next_row"])
            # The committed rows, read (not mapped: a file cut short must not SIGBUS the writer) and checked.
            crc = int(internal["vector_crc32"]) if internal.get("vector_crc32") else None
            old = (
                FlatVectors(
                    self.folder / internal["vector_file"], n_rows, dim, name=self.name, crc=crc
                ).matrix
                if n_rows
                else None
            )
            path = self.folder / new_file
            new_crc = 0
            with path.open("wb") as f:
                for part in _batches(rows, 8192):
                    if old is not None:
                        data = np.ascontiguousarray(old[[r[1] for r in part]]).tobytes()
                        new_crc = zlib.crc32(data, new_crc)
                        f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._fsync_folder()
            db.executemany(
                "UPDATE chunks SET vec_row = ? WHERE id = ?", [(i, r[0]) for i, r in enumerate(rows)]
            )
            self._set_internal(
                db,
                {
                    "vector_file": new_file,
                    "next_row": len(rows),
                    "dead_rows": 0,
                    "generation": generation,
                    "vector_crc32": new_crc,
                },
            )
            db.execute("DELETE FROM vector_log WHERE generation < ?", (generation,))
            db.execute(
                "INSERT OR REPLACE INTO vector_log(generation, rows, crc) VALUES (?, ?, ?)",
                (generation, len(rows), new_crc),
            )
        # Keep the previous generation for readers that still map it; older ones go.
        for old_file in self.folder.glob("vectors-*.f32"):
            try:
                if int(old_file.stem.split("-")[1]) < generation - 1:
                    old_file.unlink()
            except (ValueError, OSError):
                continue

    # -- search ---------------------------------------------------------------------------------
    def dense_search(
        self, vector: np.ndarray, k: int, filters: Filters | None = None, *, exact: bool = False
    ) -> list[Hit]:
        """Top k live chunks by inner product: through the ANN graph when the index is large
        enough (``ann``/``ann_threshold``) and ``exact`` is not asked, else one exact pass."""
        snap = self._snapshot()
        snap.vectors.check()  # one stat: the file still holds the committed rows
        if snap.vectors.matrix is None or snap.live == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(-1))
        if q.shape[0] != snap.dim:
            raise InputError(
                f"the query vector has {q.shape[0]} dimensions; this index has {snap.dim}.", param="query"
            )
        if not np.isfinite(q).all():
            raise InputError("the query vector holds NaN or infinite values.", param="query")
        rows = None
        if filters is not None and not filters.empty:
            rows = snap.filtered_rows(filters)
            if rows.size == 0:
                return []
        found = None if exact else self._ann_top_k(snap, q, k, rows)
        vec_rows, scores = found or snap.vectors.top_k(q, k, rows=rows, dead=snap.dead)
        if len(vec_rows) < min(k, snap.live if rows is None else rows.size):
            # Live rows scored NaN: never a silently short (or empty) answer.
            raise IndexDamaged(
                self.name,
                f"{len(vec_rows)} of {min(k, snap.live if rows is None else rows.size)} live vectors scored as numbers",
            )
        ids = snap.row_to_id[vec_rows]
        chunks = self._fetch([int(i) for i in ids if i >= 0])
        return [Hit(chunks[int(i)], float(s)) for i, s in zip(ids, scores, strict=True) if int(i) in chunks]

    def _ann_top_k(
        self, snap: _Snapshot, q: np.ndarray, k: int, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The graph's answer, or ``None`` for the exact pass: a small index, no usable graph
        yet (one is being built or caught up), rows past the graph too many to scan, a very
        selective filter, or too few allowed rows among the graph's candidates."""
        if snap.vectors.matrix is None or not self.ann.wanted(snap.live) or snap.file is None:
            return None
        eligible = snap.live if rows is None else int(rows.size)
        if rows is not None and eligible < ANN_FILTER_EXACT_BELOW * snap.live:
            return None
        ann = self.ann.current(self._committed_of(snap))
        if ann is None or snap.n_rows - min(ann.rows, snap.n_rows) > max(snap.n_rows // 5, 1024):
            return None
        if rows is None:
            allowed = snap.alive
        else:
            allowed = np.zeros(snap.n_rows, dtype=bool)
            allowed[rows] = True
        found = ann_top_k(ann, snap.vectors.matrix, snap.n_rows, q, k, allowed, eligible, self.ann.ef)
        if found is not None:
            self.ann.answered += 1
        return found

    def check_ann(self) -> str | None:
        """The ANN sidecar checked against the committed rows, as one line (``qembed index --check``)."""
        return self.ann.check_sidecar()

    def _committed_of(self, snap: _Snapshot) -> Committed:
        assert snap.file is not None
        return Committed(snap.file, _generation(snap.file), snap.dim, snap.n_rows, snap.crc, snap.live)

    def _committed(self) -> Committed | None:
        """The committed vector state now (for the ANN catch-up thread)."""
        with self._read() as db:
            internal = self._internal(db)
            live = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        if not internal.get("vector_file") or not internal.get("dimension"):
            return None
        crc = int(internal["vector_crc32"]) if internal.get("vector_crc32") else None
        return Committed(
            internal["vector_file"],
            int(internal.get("generation", 1)),
            int(internal["dimension"]),
            int(internal.get("next_row", 0)),
            crc,
            int(live),
        )

    def _logged_crc(self, generation: int, rows: int) -> int | None:
        """The CRC-32 recorded when ``rows`` rows of ``generation`` were committed."""
        if rows == 0:
            return 0
        with self._read() as db:
            found = db.execute(
                "SELECT crc FROM vector_log WHERE generation = ? AND rows = ?", (generation, rows)
            ).fetchone()
        return int(found[0]) if found else None

    def _read_rows(self, file: str, start: int, stop: int) -> np.ndarray:
        """Committed rows ``[start, stop)`` of a vector file, read (not mapped) and checked finite."""
        with self._read() as db:
            dim = int(self._internal(db)["dimension"])
        out = np.empty((stop - start, dim), dtype=np.float32)
        view = out.data.cast("B")
        try:
            fd = os.open(self.folder / file, os.O_RDONLY)
        except FileNotFoundError:
            raise IndexDamaged(self.name, f"the vector file {file} is missing") from None
        try:
            got, offset = 0, start * dim * 4
            while got < len(view):
                n = os.preadv(fd, [view[got:]], offset + got)
                if not n:
                    raise IndexDamaged(self.name, f"{file} ends before row {stop}")
                got += n
        finally:
            os.close(fd)
        if not np.isfinite(out).all():
            raise IndexDamaged(self.name, f"rows {start}-{stop} of {file} hold NaN or infinite values")
        return out

    def sync_ann(self) -> None:
        """Bring the ANN graph up to the committed rows and save its sidecar (waits); a no-op
        when the index is not searched through a graph."""
        c = self._committed()
        if c is not None and self.ann.wanted(c.live):
            self.ann.finish()

    def text_search(self, terms: Sequence[str], k: int, filters: Filters | None = None) -> list[Hit]:
        terms = [t for t in dict.fromkeys(terms) if t]
        if not terms or k <= 0:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        where, params = filter_sql(filters)
        # Rank inside FTS5 first (its ORDER BY rank LIMIT path keeps only the top k), then read
        # the k rows' metadata; a filter restricts the rowids FTS5 may return.
        restrict = f"AND rowid IN (SELECT c.id FROM chunks c WHERE 1 {where})" if where else ""
        sql = f"SELECT rowid, rank FROM fts WHERE fts MATCH ? {restrict} ORDER BY rank LIMIT ?"
        with self._read() as db:
            ranked = db.execute(sql, [match, *params, k]).fetchall()
        chunks = self._fetch([r[0] for r in ranked])
        return [Hit(chunks[r[0]], -float(r[1])) for r in ranked if r[0] in chunks]

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        with self._read() as db:
            return [
                _row_to_chunk(r)
                for r in db.execute(
                    f"SELECT {COLUMNS} FROM chunks WHERE doc_id = ? ORDER BY ordinal", (doc_id,)
                )
            ]

    def all_chunk_ids(self) -> list[tuple[str, str, int]]:
        """(chunk_id, doc_id, ordinal) of every chunk: for consistency checks."""
        with self._read() as db:
            return db.execute(
                "SELECT chunk_id, doc_id, ordinal FROM chunks ORDER BY doc_id, ordinal"
            ).fetchall()

    def stats(self) -> StoreStats:
        with self._read() as db:
            internal = self._internal(db)
            docs = db.execute("SELECT count(*) FROM docs").fetchone()[0]
            chunks = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        dim = int(internal["dimension"]) if internal.get("dimension") else None
        return StoreStats(
            docs, chunks, dim,
            {"folder": str(self.folder), "vector_rows": int(internal.get("next_row", 0)), "dead_rows": int(internal.get("dead_rows", 0)),
             "vector_file": internal.get("vector_file"), "ann": self.ann.describe()},
        )  # fmt: skip

    def close(self) -> None:
        """Close; a process that wrote to an index searched through a graph first brings the
        graph's sidecar up to date (so the next process loads it instead of building it)."""
        try:
            if self._wrote:
                self.sync_ann()
            else:
                self.ann.close()
                self.ann.save_if_grown()
        except Exception as exc:  # noqa: BLE001 - the graph only speeds searches up: never fail a close
            log.warning("index %r: the ANN sidecar was not brought up to date (%s)", self.name, exc)
        finally:
            self.ann.close()
            with self.lock:
                self._snap = None
                self.db.close()


def _generation(file: str) -> int:
    try:
        return int(file.rsplit("-", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return 0


def _has_database(folder: Path) -> bool:
    """index.sqlite holds data (in the file itself or in its write-ahead log)."""
    for name in ("index.sqlite", "index.sqlite-wal"):
        try:
            if (folder / name).stat().st_size > 0:
                return True
        except OSError:
            continue
    return False


def clear_folder(folder: Path) -> None:
    """Delete an embedded index's files (for ``qembed index --rebuild``), keeping the writer
    lock, which the caller holds. The folder is left empty of index data; opening it again
    creates a new index."""
    for f in folder.iterdir():
        if f.name in (LOCK_FILE, HOLDER_FILE, open_lock_path(folder / "index.sqlite").name):
            continue
        if f.is_dir() and not f.is_symlink():
            shutil.rmtree(f)
        else:
            f.unlink(missing_ok=True)
