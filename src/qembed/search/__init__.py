"""qembed.search: index documents and code, search them (dense, BM25, hybrid).

Layers, each its own module: ``ingest`` (files and records -> documents), ``chunking``
(documents -> chunks sized in model tokens), ``bm25`` (terms), ``store`` (embedded SQLite
+ vector file, or Milvus), ``index`` (incremental writes), ``searcher`` (ranking), ``api``
(Python), ``http`` (FastAPI router). See docs/SEARCH.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qembed.search.api import SearchIndex
    from qembed.search.index import IndexReport
    from qembed.search.searcher import SearchResult
    from qembed.search.store import Filters

__all__ = ["Filters", "IndexReport", "SearchIndex", "SearchResult"]


def __getattr__(name: str) -> Any:  # lazy: importing qembed.search must not load torch
    if name == "SearchIndex":
        from qembed.search.api import SearchIndex

        return SearchIndex
    if name == "IndexReport":
        from qembed.search.index import IndexReport

        return IndexReport
    if name == "SearchResult":
        from qembed.search.searcher import SearchResult

        return SearchResult
    if name == "Filters":
        from qembed.search.store import Filters

        return Filters
    raise AttributeError(name)
