"""``qembed embed-corpus INPUT --index NAME``: a corpus straight into a qembed search index.

The documents (id + text of each record) go through the search index's own flow
(``qembed.search``: chunking, content hashes, commits every ``commit_every`` chunks, the
index's writer lock and its ``VectorIdentity`` check), streamed from the input rather than
read whole. Resume is the index's: a re-run finds each committed document's hash unchanged
and embeds only the rest. A duplicate id keeps its first record, as the Parquet output does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from qembed.corpus.records import CorpusInput
from qembed.settings import Settings


def run_index(
    settings: Settings,
    source: CorpusInput,
    index: str,
    *,
    commit_every: int = 256,
    progress: Callable[[Any], None] | None = None,
) -> tuple[Any, int, Any]:
    """(the index's report, duplicate records skipped, its stats after the run)."""
    from qembed.search.api import SearchIndex
    from qembed.search.documents import Document
    from qembed.search.ingest import record_document

    duplicates = 0
    seen: set[str] = set()

    def documents() -> Iterator[Document]:
        nonlocal duplicates
        for ids, texts in source.blocks():
            for doc_id, text in zip(ids, texts, strict=True):
                if doc_id in seen:
                    duplicates += 1
                    continue
                seen.add(doc_id)
                yield record_document(doc_id, text, {})

    with SearchIndex.open(index, settings=settings, create=True) as idx:
        with idx.store.writer(idx.lock_timeout, "qembed embed-corpus --index"):
            indexer = idx.indexer(commit_every=commit_every)
            known = idx.store.doc_hashes("")
            report, _ = indexer.index_documents(
                documents(), known=known, total=source.count(), progress=progress
            )
        return report, duplicates, idx.stats()
