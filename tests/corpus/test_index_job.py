"""``embed-corpus --index``: records into a search index through its own flow, resumable."""

from __future__ import annotations

from qembed.corpus.index_job import run_index
from qembed.corpus.records import CorpusInput
from tests.corpus.conftest import write_jsonl


def test_records_go_into_a_search_index_and_a_rerun_embeds_nothing(tmp_path, tiny_model_dir, corpus_docs):
    from qembed import Settings
    from qembed.search.api import SearchIndex

    docs = [*corpus_docs[:60], corpus_docs[0] | {"text": "a later duplicate"}]
    source = CorpusInput.of(write_jsonl(tmp_path / "docs.jsonl", docs))
    settings = Settings().overlay(model=str(tiny_model_dir), device="cpu", data_dir=str(tmp_path / "data"))
    seen = []
    report, duplicates, stats = run_index(settings, source, "corpus", commit_every=16, progress=seen.append)
    assert (report.documents_added, duplicates, stats.documents) == (60, 1, 60)
    assert report.chunks_embedded >= 60 and seen and seen[-1].done == 60
    again, _, stats = run_index(settings, source, "corpus")
    assert (again.documents_unchanged, again.chunks_embedded, stats.documents) == (60, 0, 60)
    with SearchIndex.open("corpus", settings=settings) as idx:
        stored = idx.store.doc_hashes("")
    assert set(stored) == {d["id"] for d in corpus_docs[:60]}
