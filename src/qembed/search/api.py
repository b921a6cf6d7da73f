"""The Python API, mirroring ``qembed index`` and ``qembed search``::

    from qembed.search import SearchIndex

    with SearchIndex.open("docs", model="minilm", create=True) as idx:
        print(idx.index(["./docs"]).summary())
        for hit in idx.search("my pod stays pending", k=3, mode="hybrid"):
            print(hit.rank, hit.chunk.path, hit.chunk.heading, hit.score)

An index remembers the model it was built with (its ``VectorIdentity``: model, revision,
prompts, dimensions, dtype/backend), so opening it without a model loads that one; opening it
with a different model is an error naming both (its vectors would be meaningless), and
``SearchIndex.open(name, model=..., reembed=True).reembed()`` (``qembed index --reembed``)
moves it to the new model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed.errors import InputError
from qembed.search.chunking import ChunkConfig
from qembed.search.documents import Document
from qembed.search.index import (
    EmbedderEncoder,
    Encoder,
    Indexer,
    IndexReport,
    Progress,
    check_model,
    reembed,
)
from qembed.search.ingest import RecordFields, record_document
from qembed.search.searcher import Mode, Reranker, Searcher, SearchResult
from qembed.search.store import Filters, Store, StoreStats, open_store
from qembed.settings import Settings

if TYPE_CHECKING:
    from qembed.rerank.reranker import Reranker as RerankModel


class SearchIndex:
    """One index (a store) and the model that embeds its queries and documents."""

    def __init__(self, store: Store, encoder: Encoder, *, reembedding: bool = False) -> None:
        check_model(store.get_meta(), encoder, store.name, reembedding=reembedding)
        self.store = store
        self.encoder = encoder
        self.searcher = Searcher(store)
        self.held = ExitStack()  # the writer lock of a --rebuild, held until close
        self.lock_timeout = 30.0  # seconds a run waits for another writer of this index

    @classmethod
    def open(
        cls,
        name: str | None = None,
        *,
        model: str | None = None,
        settings: Settings | None = None,
        embedder: Any | None = None,
        encoder: Encoder | None = None,
        data_dir: str | None = None,
        store_uri: str | None = None,
        create: bool = False,
        rebuild: bool = False,
        reembed: bool = False,
        lock_timeout: float = 30.0,
    ) -> SearchIndex:
        """Open index ``name`` (default: ``settings.index``); ``create=True`` makes it if absent.

        ``rebuild=True`` deletes the index's data first (a damaged index included), holding
        its writer lock from then until ``close``, so the next ``index`` run builds it from
        scratch; without ``model`` it keeps the model the old index recorded, if readable.
        ``reembed=True`` opens it with a model it was not built with, for ``reembed`` only."""
        settings = settings or Settings()
        uri = store_uri if store_uri is not None else settings.store_uri
        held = ExitStack()
        if rebuild:
            model = (
                model
                or settings.model
                or _clear_for_rebuild(
                    held, name or settings.index, data_dir or settings.data_dir, uri, lock_timeout
                )
            )
        try:
            store = open_store(
                name or settings.index,
                data_dir=data_dir or settings.data_dir,
                store_uri=uri,
                create=create or rebuild,
                ann=settings.ann,
                ann_threshold=settings.ann_threshold,
                ann_ef=settings.ann_ef,
            )
        except BaseException:
            held.close()
            raise
        if rebuild:
            store.writer_lock = held.lock  # type: ignore[attr-defined]  # the held lock: runs nest in it
        try:
            if encoder is None:
                if embedder is None:
                    from qembed.embedding.embedder import Embedder

                    chosen = model or settings.model or store.get_meta().get("model")
                    embedder = Embedder(chosen, settings=settings)
                encoder = EmbedderEncoder(embedder)
            idx = cls(store, encoder, reembedding=reembed)
            idx.held, idx.lock_timeout = held, lock_timeout
            return idx
        except BaseException:
            store.close()
            held.close()
            raise

    # -- indexing ---------------------------------------------------------------------------------------
    def indexer(
        self, *, chunk_size: int | None = None, chunk_overlap: int | None = None, commit_every: int = 256
    ) -> Indexer:
        config = None
        if chunk_size is not None or chunk_overlap is not None:
            meta = self.store.get_meta()
            config = ChunkConfig(
                chunk_size if chunk_size is not None else int(meta.get("chunk_size", 512)),
                chunk_overlap if chunk_overlap is not None else int(meta.get("chunk_overlap", 64)),
            )
        return Indexer(self.store, self.encoder, config, commit_every=commit_every)

    def index(
        self,
        paths: Sequence[str],
        *,
        text_field: str = "text",
        id_field: str | None = None,
        title_field: str | None = None,
        metadata_fields: Sequence[str] = (),
        exclude: Sequence[str] = (),
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        commit_every: int = 256,
        progress: Callable[[Progress], None] | None = None,
    ) -> IndexReport:
        """Index files and folders incrementally (what ``qembed index`` does)."""
        fields = RecordFields(text_field, id_field, title_field, tuple(metadata_fields))
        with self.store.writer(
            self.lock_timeout, "qembed index"
        ):  # one writer: a second run waits, then names this one
            indexer = self.indexer(
                chunk_size=chunk_size, chunk_overlap=chunk_overlap, commit_every=commit_every
            )
            return indexer.index_paths(
                [str(p) for p in paths], fields=fields, exclude=exclude, progress=progress
            )

    def add_documents(
        self, docs: Iterable[Document | Mapping[str, Any]], *, commit_every: int = 256
    ) -> IndexReport:
        """Add or replace documents by id (what ``POST /v1/index`` does): dicts with id, text, metadata."""
        documents = [d if isinstance(d, Document) else _from_mapping(d, i) for i, d in enumerate(docs)]
        with self.store.writer(self.lock_timeout, "SearchIndex.add_documents"):
            report, _ = self.indexer(commit_every=commit_every).index_documents(documents)
        return report

    def reembed(
        self, *, commit_every: int = 256, progress: Callable[[Progress], None] | None = None
    ) -> IndexReport:
        """Re-embed every stored chunk with this index's model and record its identity
        (``qembed index --reembed``; see ``qembed.search.index.reembed``: resumable, crash-safe)."""
        with self.store.writer(self.lock_timeout, "qembed index --reembed"):
            return reembed(self.store, self.encoder, commit_every=commit_every, progress=progress)

    # -- searching --------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: Mode = "dense",
        path_prefix: str | None = None,
        language: str | None = None,
        file_type: str | None = None,
        filters: Filters | None = None,
        rerank: Reranker | RerankModel | None = None,
    ) -> list[SearchResult]:
        """Ranked chunks for a query (what ``qembed search`` does). ``rerank``: a loaded
        ``qembed.Reranker`` (or any ``(query, results) -> scores`` function) re-scores the top
        candidates; each result then carries ``rerank_score`` and is ranked by it."""
        filters = filters or Filters(path_prefix, language, file_type)
        from qembed.search.rerank import as_hook
        from qembed.search.searcher import check_request

        check_request(query, k, mode)
        vector = self.encoder.encode_query(query) if mode != "bm25" else None
        hook = as_hook(rerank)
        return self.searcher.search(query, vector, k=k, mode=mode, filters=filters, rerank=hook)

    def stats(self) -> StoreStats:
        return self.store.stats()

    def check(self, *, full: bool = False) -> None:
        """Raise ``IndexDamaged`` if the index fails its checks (``qembed index --check``: ``full``)."""
        self.store.check(full=full)

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.held.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clear_for_rebuild(
    held: ExitStack, name: str | None, data_dir: str, store_uri: str | None, timeout: float
) -> str | None:
    """Take the index's writer lock (kept in ``held``), delete its data, and return the model
    the old index recorded (None when it is unreadable or absent)."""
    from qembed.search.store.base import check_name
    from qembed.search.store.embedded import EmbeddedStore, clear_folder
    from qembed.search.store.lock import WriterLock

    if store_uri:
        raise InputError(
            "--rebuild works on the embedded store; for Milvus, drop the index's collections and index again.",
            param="rebuild",
        )
    name = check_name(name)
    folder = Path(data_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    lock = WriterLock(folder, name)
    held.enter_context(lock.hold(timeout, "qembed index --rebuild"))
    held.lock = lock  # type: ignore[attr-defined]
    model = None
    try:
        old = EmbeddedStore(folder, name, create=False)
        try:
            model = old.get_meta().get("model")
        finally:
            old.close()
    except Exception:  # damaged beyond reading: the caller's --model, or the default
        model = None
    clear_folder(folder)
    return model


def _from_mapping(d: Mapping[str, Any], i: int) -> Document:
    if not isinstance(d, Mapping):
        raise InputError(
            f"documents[{i}] must be an object with id, text and metadata.", param=f"documents[{i}]"
        )
    if not isinstance(d.get("id"), str) or not d["id"]:
        raise InputError(f"documents[{i}].id must be a non-empty string.", param=f"documents[{i}].id")
    if not isinstance(d.get("text"), str):
        raise InputError(f"documents[{i}].text must be a string.", param=f"documents[{i}].text")
    metadata = d.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InputError(f"documents[{i}].metadata must be an object.", param=f"documents[{i}].metadata")
    return record_document(d["id"], d["text"], dict(metadata))
