"""The embedded store's ANN graph (issue #16): recall against the exact scan, incremental
adds and deletes (a deleted chunk never comes back), a missing/damaged/stale sidecar rebuilt
or caught up instead of trusted, a writer killed between its vector append and its commit,
filters, and the exact scan kept for small indexes and on request."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from qembed.errors import InputError
from qembed.search.store import Filters
from qembed.search.store.ann import HEADER
from qembed.search.store.base import DocumentUpdate
from qembed.search.store.embedded import EmbeddedStore
from tests.search.conftest import make_chunk

pytest.importorskip("usearch")

DIM = 32
PER_DOC = 4
LANGS = ("markdown", "python", "go")


def _vectors(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    """Clustered unit vectors (like embeddings of text on a few topics), not uniform noise."""
    v = centers[rng.integers(0, len(centers), n)] + 0.35 * rng.standard_normal((n, DIM))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _docs(start: int, n_docs: int, vectors: np.ndarray, tag: str = "") -> list[DocumentUpdate]:
    out = []
    for d in range(start, start + n_docs):
        doc_id = f"doc{d}"
        lang = LANGS[d % len(LANGS)]
        path = f"{'rare' if d % 100 == 0 else 'common'}/{lang}/{d}.x"
        chunks = [
            make_chunk(doc_id, i, f"{tag}text {d} {i}", path=path, language=lang, file_type="x")
            for i in range(PER_DOC)
        ]
        rows = vectors[(d - start) * PER_DOC : (d - start + 1) * PER_DOC]
        out.append(DocumentUpdate(doc_id, f"h{tag}{d}", path, chunks, rows))
    return out


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((40, DIM))
    return _vectors(rng, 3000, centers), _vectors(rng, 40, centers)


def _write_all(folder: Path, vectors: np.ndarray) -> None:
    store = EmbeddedStore(folder, "ann", ann="on")
    n_docs = len(vectors) // PER_DOC
    for start in range(0, n_docs, 250):  # several commits, as `qembed index` writes
        part = vectors[start * PER_DOC : (start + 250) * PER_DOC]
        store.write(_docs(start, min(250, n_docs - start), part))
    store.close()  # a writer's close brings the sidecar up to date


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Indexes of the first 1200 and all 3000 rows, written once; tests work on copies."""
    vectors, _ = corpus
    root = tmp_path_factory.mktemp("ann-built")
    out = {}
    for n in (1200, 3000):
        _write_all(root / str(n), vectors[:n])
        out[n] = root / str(n)
    return out


def _build(folder: Path, vectors: np.ndarray, built: dict[int, Path]) -> EmbeddedStore:
    """A copy of the written index of ``vectors`` (its sidecar included), opened with ann='on'."""
    shutil.copytree(built[len(vectors)], folder)
    store = EmbeddedStore(folder, "ann", ann="on")
    store.sync_ann()
    assert store.ann.why == "sidecar loaded"
    return store


def _ids(hits: list) -> list[str]:
    return [h.chunk.chunk_id for h in hits]


def _recall(store: EmbeddedStore, queries: np.ndarray, k: int = 10, filters: Filters | None = None) -> float:
    got = []
    for q in queries:
        exact = set(_ids(store.dense_search(q, k, filters, exact=True)))
        got.append(len(exact & set(_ids(store.dense_search(q, k, filters)))) / max(len(exact), 1))
    return float(np.mean(got))


def test_recall_against_exact_and_exact_scores(tmp_path: Path, corpus, built) -> None:
    vectors, queries = corpus
    with _build(tmp_path / "ann", vectors, built) as store:
        before = store.ann.answered
        assert _recall(store, queries) >= 0.95
        assert store.ann.answered - before == len(queries)  # the graph answered, not the scan
        hits = store.dense_search(queries[0], 10)
        rows = {
            c: r for c, r in zip(_ids(store.dense_search(queries[0], 10, exact=True)), range(10), strict=True)
        }
        for h in hits:  # scores are re-scored float32 inner products, best first
            assert h.score == pytest.approx(
                float(store.vectors_for([h.chunk.content_hash])[h.chunk.content_hash] @ queries[0]), abs=1e-5
            )
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert rows  # the exact path answered too
        assert (tmp_path / "ann" / HEADER).exists()


def test_small_index_stays_exact_and_writes_no_sidecar(tmp_path: Path, corpus) -> None:
    vectors, queries = corpus
    store = EmbeddedStore(tmp_path / "small", "small", ann="auto")  # threshold 50k
    store.write(_docs(0, 100, vectors[:400]))
    assert len(store.dense_search(queries[0], 5)) == 5
    assert store.ann.answered == 0
    store.close()
    assert not (tmp_path / "small" / HEADER).exists()
    low = EmbeddedStore(tmp_path / "small", "small", ann="auto", ann_threshold=300)  # over the threshold
    low.sync_ann()
    assert len(low.dense_search(queries[0], 5)) == 5 and low.ann.answered == 1
    low.close()
    narrow = EmbeddedStore(tmp_path / "small", "small", ann="on", ann_ef=32)  # the search width setting
    assert narrow.ann.describe()["ef"] == 32 and len(narrow.dense_search(queries[0], 5)) == 5
    narrow.close()
    off = EmbeddedStore(tmp_path / "small", "small", ann="off")
    off.dense_search(queries[0], 5)
    assert off.ann.answered == 0
    off.close()
    with pytest.raises(InputError):
        EmbeddedStore(tmp_path / "small", "small", ann="fast")


def test_deleted_chunks_never_come_back_and_new_ones_are_found_at_once(tmp_path: Path, corpus, built) -> None:
    vectors, _ = corpus
    rng = np.random.default_rng(3)
    with _build(tmp_path / "ann", vectors, built) as store:
        gone = [f"doc{d}" for d in range(0, 750, 3)]
        gone_vectors = {d: vectors[int(d[3:]) * PER_DOC] for d in gone}
        store.write([], deletes=gone)
        assert store.ann.ann is not None and store.ann.ann.rows == len(vectors)  # rows stay in the graph
        for d, v in gone_vectors.items():
            hits = store.dense_search(v, 10)
            assert hits and all(h.chunk.doc_id not in gone_vectors for h in hits), d
        # An updated document: its old chunks never come back, its new ones rank first at once
        # (past the graph: scanned exactly until the graph catches up).
        new = _vectors(rng, PER_DOC, rng.standard_normal((1, DIM)))
        old = vectors[5 * PER_DOC]
        store.write(_docs(5, 1, new, tag="v2 "))
        top = store.dense_search(new[0], 1)[0]
        assert top.chunk.doc_id == "doc5" and top.chunk.text.startswith("v2 ")
        assert all(
            not (h.chunk.doc_id == "doc5" and not h.chunk.text.startswith("v2 "))
            for h in store.dense_search(old, 20)
        )
        store.sync_ann()
        assert store.ann.ann.rows == len(vectors) + PER_DOC
        assert store.dense_search(new[0], 1)[0].chunk.text.startswith("v2 ")


def test_missing_truncated_and_stale_sidecars_are_rebuilt_or_caught_up(tmp_path: Path, corpus, built) -> None:
    vectors, queries = corpus
    folder = tmp_path / "ann"
    _build(folder, vectors, built).close()
    expected = [_ids(EmbeddedStore(folder, "ann", ann="off").dense_search(q, 10)) for q in queries[:5]]

    def reopen() -> EmbeddedStore:
        store = EmbeddedStore(folder, "ann", ann="on")
        store.sync_ann()
        return store

    with reopen() as store:
        assert store.ann.why == "sidecar loaded"
    (graph,) = folder.glob("ann-*.usearch")
    os.truncate(graph, graph.stat().st_size // 2)
    with reopen() as store:
        assert "damaged" in store.ann.why and store.ann.ann.rows == len(vectors)
        assert _recall(store, queries) >= 0.95
    for f in [folder / HEADER, *folder.glob("ann-*.usearch")]:
        f.unlink()
    with reopen() as store:
        assert "no ANN sidecar" in store.ann.why and store.ann.ann.rows == len(vectors)
        assert [_ids(store.dense_search(q, 10, exact=True)) for q in queries[:5]] == expected
    # A header claiming rows that were never committed is refused, not trusted.
    header = json.loads((folder / HEADER).read_text())
    (folder / HEADER).write_text(json.dumps({**header, "rows": header["rows"] + 8}))
    with reopen() as store:
        assert "only" in store.ann.why and "committed" in store.ann.why
    # Stale (the sidecar covers fewer rows than are committed): loaded, then caught up.
    with EmbeddedStore(folder, "ann", ann="off") as store:
        store.write(_docs(750, 10, _vectors(np.random.default_rng(5), 40, np.ones((1, DIM)))))
    with reopen() as store:
        assert store.ann.why == "sidecar loaded" and store.ann.ann.rows == len(vectors) + 40
        assert store.dense_search(np.ones(DIM, np.float32) / np.sqrt(DIM), 1)[0].chunk.doc_id >= "doc750"


def test_writer_killed_between_vector_append_and_commit(tmp_path: Path, corpus, built, monkeypatch) -> None:
    """Rows appended by a transaction that never committed are never in the graph or results."""
    vectors, _ = corpus
    folder = tmp_path / "ann"
    _build(folder, vectors[:1200], built).close()
    rng = np.random.default_rng(11)
    ghost = _vectors(rng, PER_DOC, rng.standard_normal((1, DIM)))
    original = EmbeddedStore._append_vectors

    def append_then_die(self: EmbeddedStore, file: str, start: int, rows: np.ndarray) -> None:
        original(self, file, start, rows)
        raise KeyboardInterrupt  # the commit never happens

    store = EmbeddedStore(folder, "ann", ann="on")
    monkeypatch.setattr(EmbeddedStore, "_append_vectors", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        store.write(_docs(900, 1, ghost, tag="ghost "))
    monkeypatch.undo()
    store.sync_ann()
    assert store.ann.ann.rows == 1200  # not the appended, uncommitted rows
    assert all(not h.chunk.text.startswith("ghost") for h in store.dense_search(ghost[0], 10))
    store.close()
    vector_file = next(folder.glob("vectors-*.f32"))
    assert vector_file.stat().st_size > 1200 * DIM * 4  # the dead writer's rows are in the file
    with EmbeddedStore(folder, "ann", ann="on") as store:
        store.sync_ann()
        assert store.ann.why == "sidecar loaded" and store.ann.ann.rows == 1200
        real = _vectors(rng, PER_DOC, rng.standard_normal((1, DIM)))
        store.write(_docs(901, 1, real, tag="real "))  # overwrites the uncommitted rows
        store.sync_ann()
        assert store.dense_search(real[0], 1)[0].chunk.text.startswith("real ")
        assert all(not h.chunk.text.startswith("ghost") for h in store.dense_search(ghost[0], 10))


def test_filters_are_honoured_and_very_selective_ones_are_exact(tmp_path: Path, corpus, built) -> None:
    vectors, queries = corpus
    with _build(tmp_path / "ann", vectors, built) as store:
        lang = Filters(language="python")
        before = store.ann.answered
        for q in queries[:10]:
            hits = store.dense_search(q, 10, lang)
            assert len(hits) == 10 and all(h.chunk.language == "python" for h in hits)
        assert store.ann.answered - before == 10  # a third of the rows: over-fetch from the graph
        assert _recall(store, queries, filters=lang) >= 0.95
        rare = Filters(path_prefix="rare/")  # 1 % of the rows: exact over them
        before = store.ann.answered
        for q in queries[:5]:
            assert _ids(store.dense_search(q, 10, rare)) == _ids(store.dense_search(q, 10, rare, exact=True))
        assert store.ann.answered == before


def test_compaction_moves_to_a_new_graph(tmp_path: Path, corpus, built) -> None:
    vectors, queries = corpus
    with _build(tmp_path / "ann", vectors, built) as store:
        store.write([], deletes=[f"doc{d}" for d in range(400)])  # dead rows outnumber live: compacted
        assert store.stats().details["vector_file"] == "vectors-2.f32"
        store.sync_ann()
        assert store.ann.ann.vector_file == "vectors-2.f32" and store.ann.ann.rows == 1400
        assert _recall(store, queries) >= 0.95
        assert all(int(h.chunk.doc_id[3:]) >= 400 for q in queries[:5] for h in store.dense_search(q, 10))


def test_hybrid_search_through_the_graph(tmp_path: Path, corpus, built) -> None:
    from qembed.search.searcher import Searcher

    vectors, queries = corpus
    with _build(tmp_path / "ann", vectors, built) as store:
        results = Searcher(store).search("text 17", queries[0], k=5, mode="hybrid")
        assert len(results) == 5 and store.ann.answered >= 1


def test_index_check_reports_the_sidecar_on_disk(tmp_path: Path, corpus, built) -> None:
    """`qembed index --check` checks the graph too: ok with what it covers, stale rows it will
    catch up, a damaged graph it will rebuild (exit 0: the vectors are intact), or nothing."""
    from click.testing import CliRunner

    from qembed.cli.main import cli

    vectors, _ = corpus
    folder = tmp_path / "ann"
    _build(folder, vectors, built).close()
    n = len(vectors)

    def check() -> str | None:
        with EmbeddedStore(folder, "ann") as store:  # --check opens with ann off: the sidecar is read anyway
            return store.check_ann()

    assert check() == f"ANN graph: ok (covers {n} of {n} committed rows, size and checksums checked)"
    with EmbeddedStore(folder, "ann", ann="off") as store:  # a writer that does not keep the graph
        store.write(_docs(750, 10, _vectors(np.random.default_rng(5), 40, np.ones((1, DIM)))))
    assert check() == (
        f"ANN graph: ok (covers {n} of {n + 40} committed rows, size and checksums checked, "
        "40 newer rows caught up when the graph is next used)"
    )
    (graph,) = folder.glob("ann-*.usearch")
    os.truncate(graph, graph.stat().st_size // 2)
    damaged = check()
    assert damaged is not None and "damaged" in damaged and "rebuilt from the vector file" in damaged
    result = CliRunner().invoke(cli(), ["index", "--check", "--index", "ann", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("index 'ann': ok") and lines[1] == damaged, lines
    for f in [folder / HEADER, *folder.glob("ann-*.usearch")]:
        f.unlink()
    assert check() is None  # no graph and none wanted: nothing to say
    with EmbeddedStore(folder, "ann", ann="on") as store:
        assert (
            store.check_ann()
            == f"ANN graph: none on disk yet (built from the vector file when the graph is next used: {n + 40} rows)"
        )
