"""Incremental indexing with the real MiniLM: only changed text is embedded, deleted files
disappear, and a SIGKILLed `qembed index` leaves an index the next run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qembed.search.api import SearchIndex
from qembed.search.chunking import ChunkConfig, Chunker
from qembed.search.ingest import documents, plan
from qembed.search.store import open_store

from .conftest import CountingEncoder


def _page(topic: str, n_sections: int = 3) -> str:
    sections = "\n\n".join(
        f"## {topic} part {s}\n\n{topic} paragraph {s}: " + " ".join(f"{topic}{s}w{i}" for i in range(25))
        for s in range(n_sections)
    )
    return f"# {topic.title()}\n\nAbout {topic}.\n\n{sections}\n"


def _write(folder: Path, names: list[str], n_sections: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.md").write_text(_page(name, n_sections))


def _expected_chunks(folder: Path, encoder, size: int = 64) -> dict[str, list[str]]:
    """doc_id -> chunk texts, chunked the way the indexer does it (size capped at the window)."""
    config = ChunkConfig(min(size, encoder.window), min(16, min(size, encoder.window) // 2))
    chunker = Chunker(config, encoder.count_tokens)
    return {d.doc_id: [c.embed_text for c in chunker.chunk(d)] for s in plan([folder]) for d in documents(s)}


def test_only_changed_text_is_embedded_and_deleted_files_disappear(tmp_path: Path, minilm_encoder) -> None:
    docs = tmp_path / "docs"
    _write(docs, ["apples", "bananas", "cherries", "dates", "elderberries"])
    enc = CountingEncoder(minilm_encoder)
    with SearchIndex(open_store("inc", data_dir=tmp_path / "data"), enc) as idx:
        first = idx.index([str(docs)], chunk_size=64, chunk_overlap=16)
        assert (first.documents_added, first.documents_unchanged, first.documents_removed) == (5, 0, 0)
        total = idx.stats().chunks
        assert first.chunks_embedded == len(enc.embedded) == total > 5

        # Nothing changed: nothing embedded, nothing rewritten.
        enc.embedded.clear()
        again = idx.index([str(docs)])
        assert (again.documents_unchanged, again.chunks_embedded, len(enc.embedded)) == (5, 0, 0)

        # Rewrite one file completely: exactly that file's chunks are embedded again.
        target = docs / "cherries.md"
        target.write_text(_page("cherry", 3).replace("paragraph", "section text"))
        expected = _expected_chunks(docs, enc)[str(target.resolve())]
        enc.embedded.clear()
        touched = idx.index([str(docs)])
        assert (touched.documents_updated, touched.documents_unchanged) == (1, 4)
        assert sorted(enc.embedded) == sorted(expected), "only the changed file's chunks may reach the model"
        assert touched.chunks_embedded == len(expected)

        # Edit one paragraph: only the chunk(s) holding it are embedded; the rest reuse their vectors.
        before = {c.content_hash for c in idx.store.chunks_of(str(target.resolve()))}
        target.write_text(target.read_text().replace("section text 2:", "section text 2 (edited):"))
        enc.embedded.clear()
        edited = idx.index([str(docs)])
        after = idx.store.chunks_of(str(target.resolve()))
        new_hashes = {c.content_hash for c in after} - before
        assert 1 <= edited.chunks_embedded == len(new_hashes) < len(after)
        assert any("(edited)" in t for t in enc.embedded)
        assert all("cherry part 2" in t for t in enc.embedded), "only chunks of the edited section"
        assert edited.chunks_reused == len(after) - len(new_hashes)

        # Delete a file: its chunks are gone from the store and from results.
        gone = docs / "bananas.md"
        gone.unlink()
        enc.embedded.clear()
        removed = idx.index([str(docs)])
        assert (removed.documents_removed, removed.chunks_embedded) == (1, 0)
        assert idx.store.chunks_of(str(gone.resolve())) == []
        assert idx.stats().documents == 4
        for mode in ("dense", "hybrid", "bm25"):
            assert all(r.chunk.path != "bananas.md" for r in idx.search("bananas", k=50, mode=mode))

        # A copy under a new name: its chunk texts are known, so no embedding at all.
        (docs / "apples-copy.md").write_text((docs / "apples.md").read_text())
        copied = idx.index([str(docs)])
        assert (copied.documents_added, copied.chunks_embedded) == (1, 0) and copied.chunks_reused > 0

        # The store holds exactly what a fresh chunking of the folder gives, no duplicates.
        ids = idx.store.all_chunk_ids()
        assert (
            len(ids)
            == len({i for i, _, _ in ids})
            == sum(len(v) for v in _expected_chunks(docs, enc).values())
        )


def test_two_folders_in_one_index_do_not_remove_each_other(tmp_path: Path, minilm_encoder) -> None:
    _write(tmp_path / "a", ["one"], 1)
    _write(tmp_path / "b", ["two"], 1)
    with SearchIndex(open_store("two", data_dir=tmp_path / "data"), minilm_encoder) as idx:
        idx.index([str(tmp_path / "a")])
        report = idx.index([str(tmp_path / "b")])
        assert report.documents_removed == 0 and idx.stats().documents == 2


def test_model_mismatch_is_refused(tmp_path: Path, minilm_encoder, tiny_embedder) -> None:
    from qembed.errors import InputError
    from qembed.search.index import EmbedderEncoder

    _write(tmp_path / "d", ["one"], 1)
    with SearchIndex(open_store("m", data_dir=tmp_path / "data"), minilm_encoder) as idx:
        idx.index([str(tmp_path / "d")])
    with pytest.raises(InputError, match="was built with sentence-transformers/all-MiniLM-L6-v2"):
        SearchIndex(open_store("m", data_dir=tmp_path / "data"), EmbedderEncoder(tiny_embedder))


@pytest.mark.e2e
def test_sigkill_mid_index_then_rerun_completes_without_duplicates(tmp_path: Path, minilm_encoder) -> None:
    docs = tmp_path / "docs"
    names = [f"topic{i:02d}" for i in range(24)]
    _write(docs, names, 2)
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "qembed.cli.main", "index", str(docs), "--index", "kill", "--data-dir", str(data),
           "--model", "minilm", "--chunk-size", "64", "--chunk-overlap", "16", "--commit-every", "4"]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    committed = threading.Event()

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("progress:") and " 0 committed" not in line:
                committed.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while not committed.is_set() and proc.poll() is None and time.monotonic() < deadline:
        committed.wait(0.05)
    assert committed.is_set(), "".join(lines)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    expected = _expected_chunks(docs, minilm_encoder)
    store = open_store("kill", data_dir=data, create=False)
    partial = store.doc_hashes()
    assert 0 < len(partial) < len(names), "the kill must land mid-way"
    # Every committed document is complete; no chunk belongs to an uncommitted document.
    for doc_id in partial:
        assert [c.embed_text for c in store.chunks_of(doc_id)] == expected[doc_id]
    assert {d for _, d, _ in store.all_chunk_ids()} <= set(partial)
    store.close()

    rerun = subprocess.run(
        cmd[:-2] + ["--commit-every", "256", "--json"], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    import json

    report = json.loads(rerun.stdout)
    assert report["documents_unchanged"] == len(partial)
    assert report["documents_added"] == len(names) - len(partial)
    store = open_store("kill", data_dir=data, create=False)
    ids = store.all_chunk_ids()
    assert len(ids) == len({i for i, _, _ in ids}) == sum(len(v) for v in expected.values())
    assert set(store.doc_hashes()) == set(expected)
    for doc_id, texts in expected.items():
        assert [c.embed_text for c in store.chunks_of(doc_id)] == texts
    store.close()


@pytest.mark.e2e
def test_same_pipeline_on_milvus_lite(tmp_path: Path, minilm_encoder) -> None:
    """`--store-uri` switches the whole pipeline (indexer, searcher, CLI) to Milvus; a local
    file path is Milvus Lite, an http URI a server, through the same client code."""
    pytest.importorskip("milvus_lite", reason="pip install 'qembed-server[milvus]'")
    import json

    docs = tmp_path / "docs"
    _write(docs, ["apples", "bananas", "cherries"], 1)
    uri = str(tmp_path / "milvus.db")
    enc = CountingEncoder(minilm_encoder)
    with SearchIndex(open_store("fruit", store_uri=uri), enc) as idx:
        first = idx.index([str(docs)])
        assert (first.documents_added, first.chunks_embedded) == (3, idx.stats().chunks)
        (docs / "bananas.md").unlink()
        enc.embedded.clear()
        second = idx.index([str(docs)])
        assert (second.documents_removed, second.documents_unchanged, len(enc.embedded)) == (1, 2, 0)
        for mode in ("dense", "hybrid", "bm25"):
            hits = idx.search("cherries paragraph", k=3, mode=mode)
            assert hits[0].chunk.path == "cherries.md" and all(h.chunk.path != "bananas.md" for h in hits), (
                mode
            )
        expected = [h.chunk.chunk_id for h in idx.search("cherries paragraph", k=3, mode="hybrid")]
    # Another process (the CLI) reopens the Milvus index and loads the model it was built with.
    out = subprocess.run(
        [sys.executable, "-m", "qembed.cli.main", "search", "cherries paragraph", "-k", "3", "--mode", "hybrid",
         "--index", "fruit", "--store-uri", uri, "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [h["id"] for h in json.loads(out.stdout)] == expected


class _Interrupting(CountingEncoder):
    """Raises KeyboardInterrupt (what Ctrl-C does) inside the model call of the n-th batch."""

    def __init__(self, inner, at_call: int) -> None:
        super().__init__(inner)
        self.calls = 0
        self.at_call = at_call

    def encode_documents(self, texts):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return super().encode_documents(texts)


def test_ctrl_c_mid_batch_leaves_committed_documents_and_rerun_finishes(
    tmp_path: Path, minilm_encoder
) -> None:
    docs = tmp_path / "docs"
    _write(docs, [f"t{i}" for i in range(8)], 1)
    expected = _expected_chunks(docs, minilm_encoder)
    store = open_store("ctrlc", data_dir=tmp_path / "data")
    with pytest.raises(KeyboardInterrupt):
        SearchIndex(store, _Interrupting(minilm_encoder, at_call=3)).index(
            [str(docs)], chunk_size=64, chunk_overlap=16, commit_every=2
        )
    committed = store.doc_hashes()
    assert 0 < len(committed) < 8
    for doc_id in committed:
        assert [c.embed_text for c in store.chunks_of(doc_id)] == expected[doc_id]
    assert {d for _, d, _ in store.all_chunk_ids()} == set(committed)
    report = SearchIndex(store, minilm_encoder).index([str(docs)])
    assert (report.documents_unchanged, report.documents_added) == (len(committed), 8 - len(committed))
    assert sorted(store.doc_hashes()) == sorted(expected)
    assert len(store.all_chunk_ids()) == sum(len(v) for v in expected.values())
    store.close()
