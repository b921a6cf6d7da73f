"""The routes that compute: OpenAI's /v1/embeddings (also /embeddings), the native /embed,
and /tokenize. All behind the API key; all go through ``schemas.parse_body`` ->
``schemas.validate_request`` -> the service."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from qembed.server.auth import require_api_key
from qembed.server.disconnect import unless_disconnected
from qembed.server.openapi import OrjsonResponse, errors, request_body
from qembed.server.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    NativeEmbedRequest,
    TokenizeRequest,
    TokenizeResponse,
    parse_body,
    validate_request,
)

router = APIRouter(dependencies=[Depends(require_api_key)])
PRIORITY_HEADER = "x-qembed-priority"  # interactive (default) or bulk; the body's `priority` wins
EMBED_ERRORS = errors(400, 401, 404, 413, 429, 500, 503)


def _b64(row: np.ndarray) -> str:
    """OpenAI's base64 format: little-endian float32 bytes."""
    return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")


async def _embed(request: Request, model: type) -> tuple[Any, Any]:
    state = request.app.state
    body = parse_body(model, await request.body())
    inputs, options = validate_request(
        body, served=state.served, max_client_batch_size=state.settings.max_client_batch_size
    )
    return body, await embed_validated(request, body, inputs, options)


async def embed_validated(request: Request, body: Any, inputs: Any, options: Any) -> Any:
    """The service call of a validated body (also routes/compat.py's Ollama routes): its
    priority, the client-disconnect watch, the access log's and the metrics' counts."""
    state = request.app.state
    request.state.inputs = len(inputs)
    if getattr(body, "user", None):
        request.state.user = body.user
    bulk = (body.priority or request.headers.get(PRIORITY_HEADER, "interactive")).strip().lower() == "bulk"
    result = await unless_disconnected(request, state.service.embed(inputs, options, bulk=bulk))
    request.state.tokens = result.prompt_tokens
    state.metrics.inputs.inc(len(result.vectors))
    state.metrics.prompt_tokens.inc(result.prompt_tokens)
    return result


async def create_embeddings(request: Request) -> Response:
    """OpenAI-compatible embeddings (the OpenAI SDK's `client.embeddings.create`)."""
    body, result = await _embed(request, EmbeddingRequest)
    vectors = np.ascontiguousarray(result.vectors, dtype=np.float32)
    if body.encoding_format == "base64":
        data = [{"object": "embedding", "index": i, "embedding": _b64(v)} for i, v in enumerate(vectors)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return OrjsonResponse(
        {"object": "list", "data": data, "model": request.app.state.served.name, "usage": usage}
    )


async def native_embed(request: Request) -> Response:
    """Native route: the same options, the answer is a plain list of vectors (TEI's shape)."""
    _, result = await _embed(request, NativeEmbedRequest)
    return OrjsonResponse(np.ascontiguousarray(result.vectors, dtype=np.float32))


async def tokenize(request: Request) -> Response:
    """Token ids per input as the model reads them: special tokens + prompt + the whole text."""
    state = request.app.state
    body = parse_body(TokenizeRequest, await request.body())
    inputs, options = validate_request(
        body, served=state.served, max_client_batch_size=state.settings.max_client_batch_size
    )
    request.state.inputs = len(inputs)
    ids = await state.service.tokenize(inputs, options)
    request.state.tokens = sum(len(x) for x in ids)
    data = [{"index": i, "tokens": t, "count": len(t)} for i, t in enumerate(ids)]
    return OrjsonResponse(
        {"object": "list", "model": state.served.name, "data": data, "max_tokens": state.embedder.max_tokens}
    )


for _path in ("/v1/embeddings", "/embeddings"):
    router.add_api_route(
        _path,
        create_embeddings,
        methods=["POST"],
        response_model=EmbeddingResponse,
        responses=EMBED_ERRORS,
        openapi_extra=request_body(EmbeddingRequest),
        operation_id="create_embeddings" if _path == "/v1/embeddings" else "create_embeddings_no_prefix",
        summary="Create embeddings (OpenAI)",
        tags=["embeddings"],
    )
router.add_api_route(
    "/embed",
    native_embed,
    methods=["POST"],
    response_model=list[list[float]],
    responses=EMBED_ERRORS,
    openapi_extra=request_body(NativeEmbedRequest),
    operation_id="embed",
    summary="Embed (native: a list of vectors)",
    tags=["embeddings"],
)
router.add_api_route(
    "/tokenize",
    tokenize,
    methods=["POST"],
    response_model=TokenizeResponse,
    responses=errors(400, 401, 404, 413, 429, 503),
    openapi_extra=request_body(TokenizeRequest),
    operation_id="tokenize",
    summary="Token ids the model reads",
    tags=["embeddings"],
)
