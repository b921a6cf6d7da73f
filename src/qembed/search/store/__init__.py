"""Index storage: ``open_store`` picks the embedded store or Milvus from the settings."""

from __future__ import annotations

from pathlib import Path

from qembed.search.store.base import DocumentUpdate, Filters, Hit, Store, StoreStats, check_name

__all__ = ["DocumentUpdate", "Filters", "Hit", "Store", "StoreStats", "open_store"]


def open_store(
    name: str | None,
    *,
    data_dir: str | Path = "qembed-data",
    store_uri: str | None = None,
    create: bool = True,
    ann: str = "off",
    ann_threshold: int = 50_000,
    ann_ef: int | None = None,
) -> Store:
    """The store of index ``name``: ``data_dir/name`` on disk, or collections in Milvus when
    ``store_uri`` is given (an http(s) URI, or a local file path for Milvus Lite).

    ``ann``/``ann_threshold`` (embedded store only): when dense search goes through the
    HNSW graph (``store/ann.py``) instead of the exact scan; ``ann_ef`` its search width."""
    name = check_name(name)
    if store_uri:
        from qembed.search.store.milvus import MilvusStore

        return MilvusStore(store_uri, name, create=create)
    from qembed.search.store.embedded import EmbeddedStore

    return EmbeddedStore(
        Path(data_dir) / name, name, create=create, ann=ann, ann_threshold=ann_threshold, ann_ef=ann_ef
    )
