"""``POST /v1/search`` and ``POST /v1/index`` for ``qembed serve --index NAME``.

The router embeds through the ``embed`` coroutine it is given (the server's batching
queue), so search queries and indexed documents share model batches with ``/v1/embeddings``
traffic, under the same auth, payload limit and queue limits. Store work (SQLite, the
vector product, Milvus calls) runs in the thread pool, never on the event loop.

Errors are qembed errors (``InputError`` -> 400, ``IndexDamaged`` and ``IndexBusy`` ->
503) or request validation errors, which the server turns into OpenAI-style bodies. A
``POST /v1/index`` holds the index's writer lock (``store/lock.py``) for its whole flow, so
it never interleaves with a ``qembed index`` run on the same folder; the router's
``check_index`` is what ``/ready`` calls to answer 503 for a damaged index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from qembed.errors import IndexDamaged, InputError
from qembed.search.documents import Document
from qembed.search.index import EmbedderEncoder, Indexer, IndexReport, IndexRun
from qembed.search.ingest import record_document
from qembed.search.searcher import MAX_K, Searcher, check_request
from qembed.search.store import Filters, Store, open_store
from qembed.settings import Settings

log = logging.getLogger(__name__)
EmbedFn = Callable[..., Awaitable[Any]]  # await embed(inputs, **options) -> object with .vectors
# await rerank(query, texts) -> relevance per text
RerankFn = Callable[[str, list[str]], Coroutine[Any, Any, list[float]]]
NO_RERANKER = (
    "rerank: true needs a reranker, and this server serves none; start it with one: qembed serve --model <embedder> "
    "--index <name> --rerank-model Qwen/Qwen3-Reranker-0.6B (env QEMBED_RERANK_MODEL), or drop rerank."
)
EMBED_GROUP = 256  # texts per embed call while indexing: keeps one request from monopolising the queue
WRITER_WAIT = 10.0  # seconds a /v1/index request waits for another writer (a `qembed index` run) before 503


def _check_text(value: Any, where: str) -> None:
    """Every string in a request body (keys too) must be encodable text: FastAPI's JSON parser
    accepts a lone surrogate (``"\\ud800"``), which SQLite and the tokenizer cannot take."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError(
                "invalid_text",
                "{where} holds a lone surrogate (an unpaired \\ud800-\\udfff escape); send valid UTF-8 text.",
                {"where": where or "the body"},
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{where}: a key")
            _check_text(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, f"{where}[{i}]")


class _TextOnly(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        _check_text(data, "")
        return data


class SearchFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path_prefix: str | None = Field(None, description="Only chunks whose path starts with this.")
    language: str | None = Field(None, description="markdown, text, rst, html, python, go, ...")
    file_type: str | None = Field(None, description="File extension without the dot: md, py, ...")


class SearchRequest(_TextOnly):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(
        ..., min_length=1, pattern=r"\S", description="The text to search for (not only whitespace)."
    )
    k: int = Field(10, ge=1, le=MAX_K, description="How many chunks to return.")
    filters: SearchFilters | None = None
    mode: Literal["dense", "hybrid", "bm25"] = Field(
        "dense", description="dense, hybrid (dense + BM25 by reciprocal rank fusion) or bm25."
    )
    rerank: bool = Field(
        False,
        description="Re-score the top candidates with the served reranker (--rerank-model) and rank by its "
        "relevance (scores.rerank); without a reranker: 400.",
    )


class SearchRequestWithoutReranker(SearchRequest):
    """``SearchRequest`` of a server without a reranker: the schema says ``rerank`` can only be
    false, and ``rerank: true`` is a 400 saying how to start one."""

    rerank: bool = Field(
        False, json_schema_extra={"enum": [False]}, description="false: no reranker is served."
    )

    @field_validator("rerank")
    @classmethod
    def _no_reranker(cls, value: bool) -> bool:
        if value:
            raise PydanticCustomError("no_reranker", NO_RERANKER)
        return value


class IndexDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., min_length=1, description="Unique id; a document with the same id is replaced.")
    text: str
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free fields; path, title and language have meaning."
    )


class IndexRequest(_TextOnly):
    model_config = ConfigDict(extra="forbid")
    documents: list[IndexDocument] = Field(
        ...,
        min_length=1,
        description="At most --max-client-batch-size, each id once.",
        json_schema_extra={"x-inputs": True},
    )


async def _vectors(embed: EmbedFn, texts: list[str], input_type: str) -> np.ndarray:
    parts = []
    for i in range(0, len(texts), EMBED_GROUP):
        result = await embed(texts[i : i + EMBED_GROUP], task="retrieval", input_type=input_type)
        parts.append(np.asarray(result.vectors, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _damaged_router(exc: IndexDamaged) -> APIRouter:
    """The index could not even be opened (a corrupt SQLite file): the process stays up for
    ``/v1/embeddings``, and ``/ready`` and the search routes answer the damage (503)."""
    log.error("%s", exc.message)
    router = APIRouter(tags=["search"])

    async def damaged() -> None:
        raise exc

    router.add_api_route("/v1/search", damaged, methods=["POST"], summary="Search the served index")
    router.add_api_route("/v1/index", damaged, methods=["POST"], summary="Add or replace documents by id")
    router.add_api_route(
        "/v1/index",
        damaged,
        methods=["GET"],
        summary="What the served index holds",
        operation_id="index_stats_damaged",
    )

    def check_index() -> None:
        raise exc

    router.check_index = check_index  # type: ignore[attr-defined]
    return router


def make_router(
    *,
    settings: Settings,
    embed: EmbedFn,
    embedder: Any,
    store: Store | None = None,
    rerank: RerankFn | None = None,
) -> APIRouter:
    """The search routes for index ``settings.index`` (created empty if it does not exist).

    ``embed`` is the server's queue (vectors); ``embedder`` the loaded model, for the facts
    chunking needs (tokenizer, window): the same ``EmbedderEncoder`` the CLI indexes with.
    ``rerank`` (the reranker's queue, when one is served) re-scores ``rerank: true`` searches."""
    if store is None:
        try:
            store = open_store(
                settings.index,
                data_dir=settings.data_dir,
                store_uri=settings.store_uri,
                create=True,
                ann=settings.ann,
                ann_threshold=settings.ann_threshold,
                ann_ef=settings.ann_ef,
            )
        except IndexDamaged as exc:
            return _damaged_router(exc)
    indexer = Indexer(store, EmbedderEncoder(embedder))
    searcher = Searcher(store)
    write_lock = asyncio.Lock()  # plan -> embed -> commit of one request must not interleave with another's
    max_docs = settings.max_client_batch_size
    router = APIRouter(tags=["search"])

    async def search(body: SearchRequest) -> dict[str, Any]:
        check_request(body.query, body.k, body.mode)
        await run_in_threadpool(store.check)  # a damaged index is a 503 in every mode, bm25 too
        filters = Filters(**body.filters.model_dump()) if body.filters else None
        vector = None
        if body.mode != "bm25":
            vector = (await _vectors(embed, [body.query], "query"))[0]
        hook = None
        if body.rerank:
            if rerank is None:
                raise InputError(NO_RERANKER, param="rerank")
            loop = asyncio.get_running_loop()

            def hook(query: str, candidates: list[Any]) -> list[float]:
                # Runs in the thread pool (inside Searcher.search): the pairs go through the
                # reranker's queue on the event loop, batched with /v1/rerank traffic.
                texts = [c.chunk.embed_text or c.chunk.path for c in candidates]
                return asyncio.run_coroutine_threadsafe(rerank(query, texts), loop).result()

        results = await run_in_threadpool(
            searcher.search, body.query, vector, k=body.k, mode=body.mode, filters=filters, rerank=hook
        )
        return {
            "object": "list", "index": store.name, "mode": body.mode, "model": indexer.encoder.model_id,
            "data": [r.to_dict() for r in results],
        }  # fmt: skip

    # The body's model says whether rerank: true is accepted (a reranker is served) or a 400.
    search.__annotations__["body"] = SearchRequest if rerank is not None else SearchRequestWithoutReranker
    router.add_api_route("/v1/search", search, methods=["POST"], summary="Search the served index")

    @router.post("/v1/index", summary="Add or replace documents by id")
    async def index(body: IndexRequest) -> dict[str, Any]:
        if len(body.documents) > max_docs:
            raise InputError(
                f"{len(body.documents)} documents in one request; send at most {max_docs}.", param="documents"
            )
        await run_in_threadpool(
            store.check, load=False
        )  # a cut-short index: 503 even when every document is unchanged
        seen: set[str] = set()
        docs: list[Document] = []
        for i, d in enumerate(body.documents):
            if d.id in seen:
                raise InputError(
                    f"documents[{i}].id {d.id!r} appears twice in the request.", param=f"documents[{i}].id"
                )
            seen.add(d.id)
            docs.append(record_document(d.id, d.text, dict(d.metadata)))
        run = IndexRun(IndexReport())
        start = time.perf_counter()
        async with write_lock:  # the same flow as Indexer.index_documents, embedding through the queue
            writer = store.writer(WRITER_WAIT, f"qembed serve --index {store.name} (POST /v1/index)")
            await run_in_threadpool(writer.__enter__)
            try:
                known = await run_in_threadpool(indexer.known_hashes, docs)
                batches = indexer.batches(docs, known, run)
                while (batch := await run_in_threadpool(next, batches, None)) is not None:
                    vectors = await _vectors(embed, batch.texts, "document") if batch.texts else None
                    await run_in_threadpool(indexer.commit_batch, batch, vectors, run.report)
            finally:
                await run_in_threadpool(writer.__exit__, None, None, None)
        report = run.report
        report.seconds = round(time.perf_counter() - start, 4)
        stats = await run_in_threadpool(store.stats)
        return {
            "object": "index.report",
            "index": store.name,
            **report.to_dict(),
            "documents": stats.documents,
            "chunks": stats.chunks,
        }

    @router.get("/v1/index", summary="What the served index holds")
    async def index_stats() -> dict[str, Any]:
        stats = await run_in_threadpool(store.stats)
        meta = await run_in_threadpool(store.get_meta)
        return {
            "object": "index",
            "index": store.name,
            "store": store.kind,
            "documents": stats.documents,
            "chunks": stats.chunks,
            "dimension": stats.dimension,
            "meta": meta,
        }

    router.check_index = store.check  # type: ignore[attr-defined]  # /ready: IndexDamaged -> 503
    return router
