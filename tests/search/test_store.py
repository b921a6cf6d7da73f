"""The Store contract, run against both implementations: the embedded store (SQLite +
vector file) and Milvus (through Milvus Lite, the same client code as a cluster URI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qembed.errors import InputError
from qembed.search import bm25
from qembed.search.store import Filters, open_store
from qembed.search.store.embedded import EmbeddedStore

from .conftest import make_update


def _milvus_lite_available() -> str | None:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as exc:
        return f"pymilvus/milvus-lite not installed ({exc}); pip install 'qembed-server[milvus]'"
    return None


@pytest.fixture(params=["embedded", "milvus"])
def store_factory(request, tmp_path: Path):
    """Opens (and reopens) one index of the parametrized kind."""
    opened = []
    if request.param == "milvus":
        reason = _milvus_lite_available()
        if reason:
            pytest.skip(reason)
    uri = str(tmp_path / "milvus.db") if request.param == "milvus" else None

    def factory(create: bool = True):
        store = open_store("test-idx", data_dir=tmp_path / "data", store_uri=uri, create=create)
        opened.append(store)
        return store

    yield factory
    for s in opened:
        try:
            s.close()
        except Exception:
            pass


def _exact_top(updates, q, k):
    rows = [(float(v @ q), c.chunk_id) for u in updates for c, v in zip(u.chunks, u.vectors, strict=True)]
    return [cid for _, cid in sorted(rows, reverse=True)[:k]]


def test_write_search_replace_delete(store_factory) -> None:
    rng = np.random.default_rng(0)
    store = store_factory()
    a = make_update("docs/a.md", ["kubernetes pod pending scheduler", "node pressure eviction"], rng)
    b = make_update("docs/b_x.md", ["maxSurge controls rollout", "service endpoints"], rng)
    c = make_update(
        "src/c.py", ["def handler(): pass"], rng, path="src/c.py", language="python", file_type="py"
    )
    store.write([a, b, c])
    assert store.stats().chunks == 5 and store.stats().documents == 3 and store.stats().dimension == 8
    assert store.doc_hashes() == {u.doc_id: u.doc_hash for u in (a, b, c)}
    assert set(store.doc_hashes("docs/")) == {"docs/a.md", "docs/b_x.md"}

    # Dense: the exact inner-product ranking.
    q = a.vectors[1]
    hits = store.dense_search(q, 3)
    assert [h.chunk.chunk_id for h in hits] == _exact_top([a, b, c], q, 3)
    assert hits[0].chunk.text == "node pressure eviction" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    got = hits[0].chunk
    assert (got.doc_id, got.ordinal, got.heading, got.line_start, got.line_end, got.metadata) == (
        "docs/a.md",
        1,
        ("H", "s1"),
        11,
        15,
        {"n": 1},
    )

    # BM25 over bm25.terms: an identifier in one chunk only.
    hits = store.text_search(bm25.query_terms("max_surge"), 5)
    assert hits and hits[0].chunk.text == "maxSurge controls rollout" and hits[0].score > 0

    # Filters: path prefix (with a LIKE wildcard character in it), language, file type.
    hits = store.dense_search(q, 10, Filters(path_prefix="docs/b_"))
    assert {h.chunk.doc_id for h in hits} == {"docs/b_x.md"}
    assert store.dense_search(q, 10, Filters(path_prefix="docs/bx")) == []
    assert {h.chunk.doc_id for h in store.dense_search(q, 10, Filters(language="python"))} == {"src/c.py"}
    assert {h.chunk.doc_id for h in store.dense_search(q, 10, Filters(file_type=".md"))} == {
        "docs/a.md",
        "docs/b_x.md",
    }
    assert [
        h.chunk.doc_id for h in store.text_search(["pod", "handler"], 10, Filters(language="python"))
    ] == ["src/c.py"]

    # Vectors by content hash (what incremental indexing reuses).
    found = store.vectors_for([a.chunks[0].content_hash, "missing"])
    assert list(found) == [a.chunks[0].content_hash]
    assert np.allclose(found[a.chunks[0].content_hash], a.vectors[0], atol=1e-6)

    # Replace a document with fewer chunks: its old chunks are gone, nothing duplicated.
    a2 = make_update("docs/a.md", ["completely new text"], rng)
    store.write([a2])
    assert [c.text for c in store.chunks_of("docs/a.md")] == ["completely new text"]
    assert store.stats().chunks == 4
    assert store.doc_hashes()["docs/a.md"] == a2.doc_hash
    assert not store.text_search(["eviction"], 5)

    # Delete.
    store.write([], deletes=["docs/b_x.md"])
    assert set(store.doc_hashes()) == {"docs/a.md", "src/c.py"}
    assert store.chunks_of("docs/b_x.md") == [] and store.stats().chunks == 2
    ids = [cid for cid, _, _ in store.all_chunk_ids()]
    assert len(ids) == len(set(ids)) == 2


def test_survives_reopen_and_keeps_meta(store_factory) -> None:
    rng = np.random.default_rng(1)
    store = store_factory()
    u = make_update("a.md", ["alpha beta", "gamma delta"], rng)
    store.set_meta({"model": "minilm", "dimension": "8"})
    store.write([u])
    store.close()
    again = store_factory(create=False)
    assert again.get_meta() == {"model": "minilm", "dimension": "8"}
    assert [h.chunk.chunk_id for h in again.dense_search(u.vectors[1], 1)] == [u.chunks[1].chunk_id]
    assert again.text_search(["gamma"], 1)[0].chunk.chunk_id == u.chunks[1].chunk_id


def test_opening_a_missing_index_without_create_is_a_clear_error(store_factory) -> None:
    with pytest.raises(InputError, match="no index 'test-idx'"):
        store_factory(create=False)


def test_bad_names_and_vectors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not valid"):
        open_store("../escape", data_dir=tmp_path)
    with pytest.raises(InputError, match="--index"):
        open_store(None, data_dir=tmp_path)
    store = open_store("v", data_dir=tmp_path)
    u = make_update("a.md", ["x"], np.random.default_rng(0))
    u.vectors[:] = np.nan
    with pytest.raises(InputError, match="NaN"):
        store.write([u])
    assert store.stats().chunks == 0
    store.close()


# -- embedded store only: durability and file management ---------------------------------------


def test_uncommitted_vector_rows_are_ignored_and_overwritten(tmp_path: Path) -> None:
    """A writer killed after appending vectors but before its commit leaves rows past
    next_row; they are unreachable and the next writer overwrites them."""
    rng = np.random.default_rng(2)
    store = EmbeddedStore(tmp_path / "idx")
    first = make_update("a.md", ["one", "two"], rng)
    store.write([first])
    vec_file = tmp_path / "idx" / store.stats().details["vector_file"]
    with vec_file.open("ab") as f:  # garbage: 3 full rows and a torn one
        f.write(np.full((3, 8), 7.0, np.float32).tobytes() + b"\x01\x02")
    other = EmbeddedStore(tmp_path / "idx")  # a fresh process's view
    assert other.stats().chunks == 2
    assert len(other.dense_search(np.ones(8, np.float32) / np.sqrt(8), 10)) == 2
    second = make_update("b.md", ["three"], rng)
    other.write([second])
    assert other.stats().details["vector_rows"] == 3
    hit = other.dense_search(second.vectors[0], 1)[0]
    assert hit.chunk.doc_id == "b.md" and hit.score == pytest.approx(1.0, abs=1e-5)
    # The first connection notices the other's commit (PRAGMA data_version) without reopening.
    assert store.dense_search(second.vectors[0], 1)[0].chunk.doc_id == "b.md"
    store.close()
    other.close()


def test_compaction_drops_dead_rows_and_keeps_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = EmbeddedStore(tmp_path / "idx")
    docs = [make_update(f"d{i}.md", [f"text {i} {j}" for j in range(30)], rng) for i in range(40)]
    store.write(docs)
    keep = docs[:5]
    store.write([], deletes=[d.doc_id for d in docs[5:]])  # 1050 dead rows > 150 live: compacts
    stats = store.stats()
    assert stats.chunks == 150 and stats.details["dead_rows"] == 0 and stats.details["vector_rows"] == 150
    assert stats.details["vector_file"] == "vectors-2.f32"
    q = keep[3].vectors[7]
    assert [h.chunk.chunk_id for h in store.dense_search(q, 5)] == _exact_top(keep, q, 5)
    store.close()


@pytest.mark.e2e
def test_second_process_reads_committed_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    store = EmbeddedStore(tmp_path / "idx", "idx")
    u = make_update("a.md", ["hello world"], rng)
    store.write([u])
    code = (
        "import sys, numpy as np\n"
        "from qembed.search.store import open_store\n"
        f"s = open_store('idx', data_dir={str(tmp_path)!r}, create=False)\n"
        f"v = np.array({u.vectors[0].tolist()!r}, dtype=np.float32)\n"
        "print(s.dense_search(v, 1)[0].chunk.doc_id, s.stats().chunks)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["a.md", "1"]
    store.close()


@pytest.mark.parametrize("half", [False, True])
def test_flat_top_k_is_the_exact_float32_ranking(tmp_path: Path, monkeypatch, half: bool) -> None:
    """The float16 pre-selection (used at scale) returns the float32 top k, dead rows skipped."""
    from qembed.search.store import flat

    monkeypatch.setattr(flat, "HALF_FROM", 0 if half else 10**12)
    rng = np.random.default_rng(5)
    m = rng.standard_normal((6000, 96)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    path = tmp_path / "v.f32"
    m.tofile(path)
    vectors = flat.FlatVectors(path, 6000, 96)
    first = vectors.top_k(m[0], 1)[0].tolist()  # the first query is exact float32 and starts the copy
    assert first == [0]
    assert vectors.ready.wait(60)
    assert (vectors.half is not None) == half
    dead = np.zeros(6000, bool)
    dead[::3] = True
    for _ in range(10):
        q = rng.standard_normal(96).astype(np.float32)
        q /= np.linalg.norm(q)
        exact = m @ q
        live = np.where(dead, -np.inf, exact)
        rows, scores = vectors.top_k(q, 10, dead=dead)
        assert rows.tolist() == np.argsort(-live)[:10].tolist()
        assert np.allclose(scores, np.sort(live)[::-1][:10], atol=1e-6)
        subset = np.sort(rng.choice(6000, 3000, replace=False))
        rows, _ = vectors.top_k(q, 5, rows=subset)
        assert rows.tolist() == subset[np.argsort(-exact[subset])[:5]].tolist()
