"""Index integrity (issue #13): a damaged embedded index is a clear ``IndexDamaged`` (never
SIGBUS, never a raw ValueError, never a silently empty result), bad vectors are refused at
write time naming the document, and one writer at a time holds an index."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qembed.errors import IndexBusy, IndexDamaged, InputError
from qembed.search.store.embedded import EmbeddedStore
from tests.search.conftest import make_update, words

DIM = 8


def _store(folder: Path, n_docs: int = 4, chunks: int = 30) -> EmbeddedStore:
    store = EmbeddedStore(folder, "notes")
    rng = np.random.default_rng(1)
    store.write(
        [make_update(f"d{i}", [f"text {i} {j}" for j in range(chunks)], rng, dim=DIM) for i in range(n_docs)]
    )
    return store


def _vector_file(folder: Path) -> Path:
    (path,) = folder.glob("vectors-*.f32")
    return path


def _assert_damaged(exc: pytest.ExceptionInfo[IndexDamaged]) -> None:
    assert exc.value.code == "index_damaged"
    assert (
        "'notes'" in exc.value.message
        and "qembed index" in exc.value.message
        and "--rebuild" in exc.value.message
    )


def test_truncated_vector_file_is_index_damaged_on_open(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    _store(folder).close()
    path = _vector_file(folder)
    os.truncate(path, path.stat().st_size // 2)
    store = EmbeddedStore(folder, "notes", create=False)
    with pytest.raises(
        IndexDamaged
    ) as exc:  # old: numpy's "mmap length is greater than file size" ValueError
        store.dense_search(np.ones(DIM, np.float32) / np.sqrt(DIM), 3)
    _assert_damaged(exc)
    assert "bytes" in exc.value.message
    with pytest.raises(IndexDamaged):
        store.check()
    # Writing onto it is refused too (an append past the cut would leave a hole of zeros).
    with pytest.raises(IndexDamaged):
        store.write([make_update("new", ["x"], np.random.default_rng(2), dim=DIM)])
    store.close()


@pytest.mark.e2e
def test_truncation_under_a_reader_is_an_error_not_sigbus(tmp_path: Path) -> None:
    """A process that already searched the index, whose vector file is then cut short,
    answers IndexDamaged on its next search and keeps running (old: killed by SIGBUS)."""
    folder = tmp_path / "notes"
    _store(folder).close()
    script = textwrap.dedent(f"""
        import os, numpy as np
        from qembed.errors import IndexDamaged
        from qembed.search.store.embedded import EmbeddedStore
        store = EmbeddedStore({str(folder)!r}, "notes", create=False)
        q = np.ones({DIM}, np.float32) / np.sqrt({DIM})
        assert len(store.dense_search(q, 5)) == 5
        (path,) = [p for p in store.folder.glob("vectors-*.f32")]
        os.truncate(path, 0)
        for _ in range(3):
            try:
                store.dense_search(q, 5)
                print("NO ERROR")
            except IndexDamaged as exc:
                print("DAMAGED", exc.message)
        print("ALIVE")
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    lines = out.stdout.splitlines()
    assert lines[-1] == "ALIVE"
    assert all(line.startswith("DAMAGED index 'notes' is damaged") for line in lines[:-1]), lines
    assert "--rebuild" in lines[0]


def test_corrupted_bytes_fail_the_checksum(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    _store(folder).close()
    path = _vector_file(folder)
    data = bytearray(path.read_bytes())
    data[100:104] = np.float32(0.5).tobytes()  # same size, one value changed
    path.write_bytes(bytes(data))
    store = EmbeddedStore(folder, "notes", create=False)
    with pytest.raises(IndexDamaged) as exc:
        store.dense_search(np.ones(DIM, np.float32) / np.sqrt(DIM), 3)
    _assert_damaged(exc)
    assert "checksum" in exc.value.message
    store.close()


def test_nan_rows_in_the_file_are_damage_not_an_empty_result(tmp_path: Path) -> None:
    """Every row NaN (and no checksum recorded, as in an index from before checksums): old
    behaviour was 200 with no results; now IndexDamaged names the row."""
    folder = tmp_path / "notes"
    store = _store(folder, n_docs=1, chunks=5)
    store.db.execute("DELETE FROM meta WHERE key = 'store.vector_crc32'")
    store.close()
    path = _vector_file(folder)
    path.write_bytes(np.full((5, DIM), np.nan, np.float32).tobytes())
    store = EmbeddedStore(folder, "notes", create=False)
    with pytest.raises(IndexDamaged) as exc:
        store.dense_search(np.ones(DIM, np.float32) / np.sqrt(DIM), 3)
    _assert_damaged(exc)
    assert "row 0" in exc.value.message and "NaN" in exc.value.message
    store.close()


def test_checksum_is_kept_across_appends_deletes_and_compaction(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    store = _store(folder, n_docs=3, chunks=10)
    rng = np.random.default_rng(3)
    q = np.ones(DIM, np.float32) / np.sqrt(DIM)
    assert len(store.dense_search(q, 5)) == 5
    store.write([make_update("d9", ["more"] * 4, rng, dim=DIM)])
    store.write([], deletes=["d0", "d1"])
    store.compact()
    store.check(full=True)
    other = EmbeddedStore(folder, "notes", create=False)  # a fresh reader verifies every row
    assert len(other.dense_search(q, 100)) == 14
    other.check(full=True)
    other.close()
    store.close()


def test_corrupt_sqlite_is_index_damaged(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    _store(folder).close()
    db = folder / "index.sqlite"
    data = bytearray(db.read_bytes())
    data[:16] = b"not sqlite here!"
    db.write_bytes(bytes(data))
    with pytest.raises(IndexDamaged) as exc:  # old: sqlite3.DatabaseError traceback
        EmbeddedStore(folder, "notes", create=False)
    _assert_damaged(exc)


def test_emptied_sqlite_is_not_a_new_empty_index(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    _store(folder).close()
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        if (folder / name).exists():
            os.truncate(folder / name, 0)
    with pytest.raises(IndexDamaged):  # old: opened as an empty index, every search "no results"
        EmbeddedStore(folder, "notes", create=False)


@pytest.mark.parametrize("bad", ["nan", "inf", "zero"])
def test_bad_vectors_are_refused_at_write_naming_the_document(tmp_path: Path, bad: str) -> None:
    store = EmbeddedStore(tmp_path / "notes", "notes")
    rng = np.random.default_rng(4)
    good = make_update("good", ["fine"], rng, dim=DIM)
    broken = make_update("broken", ["a", "b", "c"], rng, dim=DIM, path="docs/broken.md")
    broken.vectors[1] = {"nan": np.nan, "inf": np.inf, "zero": 0.0}[bad]
    with pytest.raises(InputError) as exc:
        store.write([good, broken])
    assert (
        "'broken'" in exc.value.message
        and "chunk 1" in exc.value.message
        and "docs/broken.md" in exc.value.message
    )
    assert store.stats().chunks == 0  # nothing of that commit was written
    store.close()


# -- one writer per index ---------------------------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from qembed.search.store.lock import WriterLock
lock = WriterLock(Path(sys.argv[1]), "notes")
with lock.hold(5, "qembed index (test holder)"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.mark.e2e
def test_second_writer_waits_then_names_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    store = _store(folder, n_docs=1, chunks=2)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), "30"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(IndexBusy) as exc, store.writer(timeout=1.0):
            pass
        assert time.monotonic() - start >= 0.9  # it waited
        assert exc.value.code == "index_busy"
        assert (
            f"pid {holder.pid}" in exc.value.message
            and "test holder" in exc.value.message
            and "'notes'" in exc.value.message
        )
    finally:
        holder.kill()
        holder.wait()
    # The holder died: its OS lock went with it, so the next writer gets in (a stale sidecar is only text).
    with store.writer(timeout=5):
        holder_info = json.loads((folder / "writer.lock.json").read_text())
        assert holder_info["pid"] == os.getpid()
    assert not (folder / "writer.lock.json").exists()
    store.close()


class SlowHashEncoder:
    """Deterministic vectors from a text hash, a word-count tokenizer, and a pause per batch so
    that two runs overlap."""

    model = model_id = "hash-encoder"
    dimension = DIM
    window = 512

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.embedded: list[str] = []
        self.lock = threading.Lock()

    def count_tokens(self, texts: list[str]) -> list[int]:
        return words(texts)

    def _vec(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        time.sleep(self.pause)
        with self.lock:
            self.embedded.extend(texts)
        return np.stack([self._vec(t) for t in texts])

    def encode_query(self, text: str) -> np.ndarray:
        return self._vec(text)


def test_two_index_runs_on_one_index_embed_once(tmp_path: Path) -> None:
    """Old behaviour: both runs planned 'everything is new' and both embedded everything."""
    from qembed.search.api import SearchIndex

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"p{i}.md").write_text(f"# Page {i}\n\nParagraph {i} about topic {i * 7}.\n")
    encoder = SlowHashEncoder(pause=0.3)
    data = tmp_path / "data"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with SearchIndex.open(
                "notes", encoder=encoder, data_dir=str(data), create=True
            ) as idx:  # waits up to 30 s
                idx.index([str(docs)], commit_every=1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(encoder.embedded) == len(set(encoder.embedded)) == 6


def test_rebuild_replaces_a_damaged_index(tmp_path: Path) -> None:
    from qembed.search.api import SearchIndex

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nalpha beta gamma\n")
    data = tmp_path / "data"
    encoder = SlowHashEncoder()
    with SearchIndex.open("notes", encoder=encoder, data_dir=str(data), create=True) as idx:
        idx.index([str(docs)])
    os.truncate(_vector_file(data / "notes"), 3)
    with SearchIndex.open("notes", encoder=encoder, data_dir=str(data)) as idx, pytest.raises(IndexDamaged):
        idx.search("alpha", k=1)
    with SearchIndex.open("notes", encoder=encoder, data_dir=str(data), rebuild=True) as idx:
        report = idx.index([str(docs)])
        assert report.documents_added == 1
        assert [r.chunk.path for r in idx.search("alpha", k=1)] == ["a.md"]
    with SearchIndex.open("notes", encoder=encoder, data_dir=str(data)) as idx:
        idx.check(full=True)


# -- the CLI ----------------------------------------------------------------------------------------------------
def _cli(*args: str):
    from qembed.cli.main import cli

    return CliRunner().invoke(cli(), list(args))


def test_cli_on_a_damaged_index_prints_one_error_and_exits_2_and_rebuild_fixes_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Alpha\n\nalpha beta gamma\n")
    (docs / "b.md").write_text("# Delta\n\ndelta epsilon\n")
    data = tmp_path / "data"
    common = ["--index", "notes", "--data-dir", str(data), "--model", str(tiny_model_dir)]
    built = _cli("index", str(docs), *common)
    assert built.exit_code == 0, built.output
    ok = _cli("index", "--check", "--index", "notes", "--data-dir", str(data))
    assert ok.exit_code == 0 and "ok" in ok.output, ok.output
    path = _vector_file(data / "notes")
    os.truncate(path, path.stat().st_size - 4)
    check = ["index", "--check", "--index", "notes", "--data-dir", str(data)]
    for args in (["search", "alpha", *common], check, ["index", str(docs), *common]):
        result = _cli(*args)
        assert result.exit_code == 2, (args, result.exit_code, result.output, result.exception)
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: index 'notes' is damaged"), errors
        assert "--rebuild" in errors[0]
    rebuilt = _cli(
        "index", str(docs), "--rebuild", *common[:4]
    )  # the model comes from the old index's record
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "2 added" in rebuilt.output
    assert _cli(*check).exit_code == 0
    found = _cli("search", "alpha", "--json", *common)
    assert found.exit_code == 0 and json.loads(found.output.strip().splitlines()[-1]), found.output


def test_two_openers_of_a_new_index_at_once_both_succeed(tmp_path: Path) -> None:
    """SQLite skips its busy handler for the WAL switch: without the open lock about a third
    of these races failed at once with 'database is locked' (CI saw it through SearchIndex)."""
    from qembed.search.store.embedded import EmbeddedStore

    errors: list[BaseException] = []
    for trial in range(30):
        folder = tmp_path / f"idx{trial}"

        def open_and_write(folder: Path = folder) -> None:
            try:
                store = EmbeddedStore(folder, "notes")
                store.set_meta({"opened": "yes"})
                store.close()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_write) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors
