"""Routes about the server: models (behind the API key, as OpenAI's are), and the open
ones a load balancer or Prometheus polls: /health, /ready, /info, /metrics."""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from qembed.errors import QembedError
from qembed.server.auth import is_authenticated, require_api_key
from qembed.server.errors import SERVER, APIError, error_response, from_qembed
from qembed.server.metrics import CONTENT_TYPE
from qembed.server.openapi import OrjsonResponse, errors
from qembed.server.schemas import Info, ModelList, RerankerInfo, Status, describe

models_router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"])
open_router = APIRouter(tags=["operations"])


async def list_models(request: Request) -> Response:
    """The served models (OpenAI's list shape): the embedder, and the reranker when one is
    served (``kind: "rerank"``; OpenAI clients ignore the field)."""
    state = request.app.state
    info = state.embedder.info
    card = {
        "id": state.served.name,
        "object": "model",
        "created": state.started,
        "owned_by": "qembed",
        "kind": "embedding",
        "source": info.source,
        "fallback_reason": info.fallback_reason,
    }
    cards = [card]
    if getattr(state, "rerank_service", None) is not None:
        cards.append(
            {
                "id": state.rerank_served.name,
                "object": "model",
                "created": state.started,
                "owned_by": "qembed",
                "kind": "rerank",
                "source": None,
                "fallback_reason": None,
            }
        )
    return OrjsonResponse({"object": "list", "data": cards})


for _path in ("/v1/models", "/models"):
    models_router.add_api_route(
        _path,
        list_models,
        methods=["GET"],
        response_model=ModelList,
        responses=errors(401),
        operation_id="list_models" if _path == "/v1/models" else "list_models_no_prefix",
    )


@open_router.get(
    "/health",
    response_model=Status,
    responses=errors(503),
    summary="Alive: the process answers and its model worker runs",
)
async def health(request: Request) -> Response:
    state = request.app.state
    for service in getattr(state, "services", [state.service]):
        if not service.worker.alive and not service.draining:
            # Nothing would ever answer that model's requests again: let the orchestrator restart us.
            what = "reranker's model worker" if service is not state.service else "model worker"
            return error_response(
                APIError(503, f"The {what} has stopped.", type=SERVER, code="worker_stopped")
            )
    return OrjsonResponse({"status": "ok"})


@open_router.get(
    "/ready",
    response_model=Status,
    responses=errors(503),
    summary="Ready: 503 until the warm-up pass of every served model is done, or while the served index is damaged",
)
async def ready(request: Request) -> Response:
    state = request.app.state
    if state.service.draining:
        return error_response(APIError(503, "Shutting down.", type=SERVER, code="shutting_down"))
    for service in getattr(state, "services", [state.service]):  # the embedder, then the reranker
        if service.warmup_error:
            return error_response(APIError(503, service.warmup_error, type=SERVER, code="warmup_failed"))
        if not service.ready:
            what = "the reranker's first batch" if service is not state.service else "the first model batch"
            return error_response(
                APIError(503, f"Warming up: {what} is running.", type=SERVER, code="not_ready")
            )
    check = getattr(request.app.state, "index_check", None)
    if check is not None:  # `serve --index`: a damaged index (IndexDamaged) is not ready
        try:
            await run_in_threadpool(check)
        except QembedError as exc:
            return error_response(from_qembed(exc))
    return OrjsonResponse({"status": "ready"})


_ABSOLUTE = re.compile(r"^(/|~|\\\\|[A-Za-z]:[\\/])")


def _folder_only(name: str) -> str:
    """An absolute path's last part (``/srv/models/Qwen3-Embedding-0.6B`` -> the folder name)."""
    if not _ABSOLUTE.match(name):
        return name
    return PureWindowsPath(name).name if "\\" in name else (PurePosixPath(name).name or name)


@open_router.get(
    "/info",
    response_model=Info,
    summary="Model, limits, version, device",
    description="Open (no key needed). Names that are absolute paths on the server (a local --model) are shown as their "
    "folder name only, unless the request carries a valid --api-key.",
)
async def info(request: Request) -> Response:
    state = request.app.state
    i, s, service = state.embedder.info, state.settings, state.service
    show = (lambda name: name) if is_authenticated(request) else _folder_only
    body = describe(i, s, state.served, max_batch_tokens=service.max_batch_tokens, show=show)
    memory = getattr(state, "memory", {})
    body.memory = {"weights_bytes": memory.get("embedder")}
    rerank_service = getattr(state, "rerank_service", None)
    if rerank_service is not None:
        r, served = rerank_service.scorer.info, state.rerank_served
        body.reranker = RerankerInfo(
            model=show(r.model_id),
            served_model_name=show(served.name),
            accepted_model_names=sorted({show(name) for name in served.accepted}),
            kind=r.kind,
            max_length=r.max_length,
            default_instruction=r.default_instruction,
            device=r.device,
            dtype=r.dtype,
            max_batch_tokens=rerank_service.max_batch_tokens,
            memory={"weights_bytes": memory.get("reranker")},
        )
    return OrjsonResponse(body.model_dump())


@open_router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
