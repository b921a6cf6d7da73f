"""``create_app(settings, embedder)``: the FastAPI application of ``qembed serve``.

Lifespan: start the model worker, run the warm-up batch in the background (``/ready`` is
503 until it is done, while ``/health`` already answers), and at shutdown finish every
queued window before the worker stops. The async ``embed`` other routers need (search)
is ``app.state.embed``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware

import qembed
from qembed.embedding.embedder import Embedder
from qembed.rerank.protocol import PairScorer
from qembed.server import errors as error_handlers
from qembed.server import openapi
from qembed.server.auth import protected_paths, require_api_key
from qembed.server.metrics import Metrics
from qembed.server.middleware import Observe, RequestGate
from qembed.server.routes import compat, rerank
from qembed.server.routes.embeddings import router as embeddings_router
from qembed.server.routes.meta import models_router, open_router
from qembed.server.routes.playground import router as playground_router
from qembed.server.schemas import EmbeddingRequest, NativeEmbedRequest, ServedModel, TokenizeRequest
from qembed.serving.rerank_service import RerankService
from qembed.serving.service import EmbeddingService, ModelService, weights_bytes
from qembed.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = (
    "OpenAI-compatible text embeddings (Qwen3-Embedding and sentence-transformers models), and with "
    "--rerank-model a reranker (Qwen3-Reranker, cross-encoders) behind /v1/rerank, /rerank and /score. "
    'Every error has OpenAI\'s body: {"error": {"message", "type", "param", "code"}}.'
)


def create_app(
    settings: Settings | None = None, embedder: Embedder | None = None, reranker: PairScorer | None = None
) -> FastAPI:
    """The app for ``settings`` (default: from the environment). ``embedder`` is loaded from
    the settings when not given (``qembed serve`` loads it first to fail before binding), and
    so is ``reranker`` when ``--rerank-model`` names one: it gets its own model thread and
    queue (``serving/rerank_service``) and the rerank routes."""
    settings = settings or Settings()
    if embedder is None:
        embedder = Embedder(settings=settings)
    if reranker is None and settings.rerank_model:
        from qembed.rerank.reranker import Reranker

        reranker = Reranker(settings.rerank_model, settings=settings)
    metrics = Metrics()
    service = EmbeddingService(embedder, settings, on_batch=metrics.observe_batch)
    queue = service.queue
    metrics.watch_queue(
        lambda: queue.queued_windows,
        lambda: queue.queued_tokens,
        lambda: queue.queued_requests,
        lambda: queue.tokens_per_second,
    )
    metrics.ready.set_function(lambda: 1.0 if service.ready else 0.0)
    metrics.cancelled_requests.set_function(lambda: queue.cancelled_requests)
    metrics.dropped_windows.set_function(lambda: queue.dropped_windows)
    metrics.aborted_requests.set_function(lambda: service.aborted_requests)
    if embedder.cache is not None:

        def count_lookup(hits: int, misses: int) -> None:
            metrics.cache_hits.inc(hits)
            metrics.cache_misses.inc(misses)

        embedder.cache.on_lookup = count_lookup

    rerank_service: RerankService | None = None
    if reranker is not None:
        rerank_name = reranker.info.model_id
        rerank_service = RerankService(
            reranker,
            settings,
            on_batch=metrics.watch_reranker(
                rerank_name,
                queued_tokens=lambda: rerank_service.queue.queued_tokens if rerank_service else 0,
                ready=lambda: 1.0 if rerank_service and rerank_service.ready else 0.0,
                dropped=lambda: rerank_service.queue.dropped_windows if rerank_service else 0,
            ),
        )
        service.also_drain(rerank_service)  # SIGTERM and the gate know the embedder's service
    services: list[ModelService] = [service] if rerank_service is None else [service, rerank_service]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for each in services:
            each.start()
        warmups = [asyncio.create_task(each.warm_up(), name="qembed-warmup") for each in services]
        try:
            yield
        finally:
            await asyncio.gather(*(each.stop(settings.shutdown_timeout) for each in services))
            for warmup in warmups:
                if not warmup.done():
                    warmup.cancel()

    # redirect_slashes=False: RequestGate serves /v1/embeddings/ as /v1/embeddings (no 307).
    app = FastAPI(
        title="qembed",
        version=qembed.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
    )  # /docs, /redoc: routes/playground.py, offline
    app.state.settings = settings
    app.state.embedder = embedder
    app.state.service = service
    app.state.metrics = metrics
    app.state.served = ServedModel.from_embedder(
        embedder.info, served_model_name=settings.served_model_name, requested=settings.model
    )
    metrics.describe_model("embedder", app.state.served.name, embedder.info)
    app.state.services = services  # every model's service: /health and /ready ask each
    app.state.rerank_service = rerank_service
    app.state.reranker = reranker
    app.state.memory = {"embedder": weights_bytes(embedder), "reranker": weights_bytes(reranker)}
    if reranker is not None:
        app.state.rerank_served = rerank.rerank_served(
            reranker.info, requested=settings.rerank_model, embedder=app.state.served
        )
        metrics.describe_model("reranker", app.state.rerank_served.name, reranker.info)
        app.state.served = dataclasses.replace(
            app.state.served, others=rerank.embedder_hint(app.state.rerank_served, app.state.served)
        )
    app.state.api_keys = [k.get_secret_value().encode() for k in settings.api_key]
    app.state.started = int(time.time())
    app.state.embed = service.embed

    error_handlers.install(app)
    app.include_router(embeddings_router)
    app.include_router(models_router)
    app.include_router(open_router)
    app.include_router(playground_router)  # /, /docs, /redoc and their assets (no CDN)
    app.include_router(
        compat.router
    )  # other servers' shapes: Ollama's /api/*, TEI's /decode, vLLM's /detokenize
    app.include_router(compat.open_router)  # /version, /api/version (open, as /info is)
    rerank_router = rerank.make_router(documented=reranker is not None)  # 404 how-to without a reranker
    app.include_router(rerank_router)
    keyed = [
        embeddings_router,
        models_router,
        compat.router,
        rerank_router,
    ]  # the routers behind require_api_key (RequestGate checks them first)
    if settings.index:
        from qembed.server.routes.search import make_router  # only when an index is served

        search_router = make_router(
            settings=settings,
            embed=service.embed,
            embedder=service.embedder,
            rerank=rerank_service.relevance if rerank_service is not None else None,
        )
        app.state.index_check = search_router.check_index  # type: ignore[attr-defined]  # /ready answers 503 for a damaged index
        app.include_router(search_router, dependencies=[Depends(require_api_key)])
        keyed.append(search_router)
    openapi.install(
        app,
        [EmbeddingRequest, NativeEmbedRequest, TokenizeRequest, *(rerank.BODY_MODELS if reranker else [])],
        vocab_size=embedder.tokenizer.vocab_size,
        max_inputs=settings.max_client_batch_size,
        options=_option_facts(embedder, settings),
        exclusive=PROMPT_CHOICES,
    )

    # Middlewares, innermost first (add_middleware puts each new one outside the last).
    app.add_middleware(
        RequestGate,
        payload_limit=settings.payload_limit,
        metrics=metrics,
        draining=lambda: service.draining,
        api_keys=app.state.api_keys,
        protected=protected_paths(keyed),  # checked before the body is read
    )
    if settings.cors_allow_origin:  # outside the gate: its 401/413/503 carry the CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origin,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
        )
    # (the routers' own routes too: FastAPI >= 0.16x keeps included routers lazy in app.routes)
    known: set[str] = {getattr(r, "path", "") for r in app.routes} | protected_paths(
        [*keyed, open_router, compat.open_router]
    )
    app.add_middleware(Observe, metrics=metrics, known_paths=known)
    _log_start(settings, embedder, service)
    if reranker is not None and rerank_service is not None:
        i = reranker.info
        log.info(
            "serving reranker %s (%s, max_length %d, %s/%s) on its own model thread",
            i.model_id,
            i.kind,
            i.max_length,
            i.device,
            i.dtype,
        )
    return app


PROMPT_CHOICES = (
    "prompt_name",
    "prompt",
    "instruction",
    "task",
)  # at most one per request (model.instructions.resolve_prompt)


def _option_facts(embedder: Embedder, settings: Settings) -> dict[str, dict[str, Any]]:
    """What the served model allows of the encode options, for the OpenAPI schema (so that
    the schema says what the server accepts)."""
    from qembed.model.instructions import TASKS

    info = embedder.info
    facts: dict[str, dict[str, Any]] = {
        "dimensions": {
            "minimum": 1 if settings.force_dimensions else info.min_dimensions,
            "maximum": info.dimension,
        },
        "task": {"enum": sorted(TASKS)},
        "instruction": {"pattern": r"\S"},  # not only whitespace
        "max_tokens": {"minimum": embedder.tokenizer.special.count + 1},  # room for one token of text
    }
    if info.prompts:
        facts["prompt_name"] = {"enum": sorted(info.prompts)}
    return facts


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a --host value) only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name (or "" / "::" / "0.0.0.0"-like): assume it is reachable


def _log_start(settings: Settings, embedder: Embedder, service: EmbeddingService) -> None:
    effective: dict[str, Any] = settings.masked()
    effective["max_batch_tokens"] = service.max_batch_tokens
    log.info("settings: %s", effective)
    if not settings.api_key and not is_loopback(settings.host):
        log.warning(
            "listening on %s without --api-key: anyone who can reach this port can use the model "
            "(set --api-key / QEMBED_API_KEY, or bind 127.0.0.1 behind a proxy)",
            settings.host,
        )
    info = embedder.info
    log.info(
        "serving %s (dim %d, max_tokens %d, %s/%s)%s",
        info.model_id,
        info.dimension,
        info.max_tokens,
        info.device,
        info.dtype,
        f" -- FALLBACK: {info.fallback_reason}" if info.fallback_reason else "",
    )
