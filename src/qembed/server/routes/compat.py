"""Other servers' request and response shapes, mapped onto qembed's own service calls.

- Ollama: ``POST /api/embed`` and the legacy ``POST /api/embeddings`` (``service.embed``),
  ``GET /api/tags`` (the served model as Ollama lists one), ``GET /api/version``. Ollama
  model names carry a tag (``all-minilm-l6-v2:latest``): a name is accepted with or without
  one. Errors on /api/* have Ollama's body, ``{"error": "..."}``, with qembed's status codes
  (the key check and the payload limit, which answer before a route runs, keep OpenAI's).
- TEI: ``POST /decode`` (token ids -> texts); vLLM: ``POST /detokenize`` (-> ``{"prompt"}``),
  ``POST /v1/tokenize`` (qembed's ``/tokenize``, same body and answer), ``GET /version``.

``router`` is behind the API key, as routes/embeddings.py's is; ``open_router`` (the
versions) is open, as /info is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import qembed
from qembed.encode.inputs import parse_inputs
from qembed.errors import InputError, QembedError
from qembed.server.auth import is_authenticated, require_api_key
from qembed.server.errors import APIError, count, from_qembed
from qembed.server.openapi import OrjsonResponse, errors
from qembed.server.routes.embeddings import embed_validated, tokenize
from qembed.server.routes.meta import _folder_only
from qembed.server.schemas import (
    EmbedOptions,
    NativeEmbedRequest,
    ServedModel,
    TokenizeRequest,
    TokenizeResponse,
    parse_body,
    validate_request,
)

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["compatibility"])
open_router = APIRouter(tags=["compatibility"])

TAG = "latest"  # the tag /api/tags gives a served name that has none


# -- Ollama's bodies -----------------------------------------------------------------------------


class OllamaError(BaseModel):
    """Ollama's error body (on /api/*)."""

    error: str


class _OllamaOptions(EmbedOptions):
    """Ollama's fields besides the input; qembed's encode options are accepted too."""

    options: dict[str, Any] | None = Field(
        None, description="Ollama's model options (num_ctx, ...): accepted and ignored."
    )
    keep_alive: int | float | str | None = Field(
        None, description="Accepted and ignored (the model stays loaded)."
    )


class OllamaEmbedRequest(_OllamaOptions):
    """POST /api/embed."""

    input: str | list[str] = Field(
        description='A text or a list of texts. An empty one ("" or []) gives no embeddings, as Ollama\'s model-loading call does.'
    )
    truncate: bool | None = Field(
        None,
        description="true (default): an input longer than the window is cut (long_text=truncate); false: it is a 400 "
        "(long_text=error). Unset, an explicit long_text decides.",
    )


class OllamaEmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int = Field(description="Nanoseconds.")
    load_duration: int = 0
    prompt_eval_count: int = Field(description="Tokens the model read.")


class OllamaEmbeddingsRequest(BaseModel):
    """POST /api/embeddings (Ollama's legacy route; its ``prompt`` is the text, so qembed's
    options, whose ``prompt`` is a prefix, are not taken here: use /api/embed for them)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    prompt: str = Field("", description="One text. Empty: an empty embedding.")
    options: dict[str, Any] | None = Field(None, description="Ollama's model options: accepted and ignored.")
    keep_alive: int | float | str | None = Field(None, description="Accepted and ignored.")


class OllamaEmbeddingsResponse(BaseModel):
    embedding: list[float]


class OllamaModelDetails(BaseModel):
    parent_model: str
    format: str = Field(description="qembed's backend: torch, onnx or openvino.")
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class OllamaModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int = Field(description="Bytes of the model's files.")
    digest: str = Field(
        description="sha256 of the model files' names, sizes and modification times (not of their bytes)."
    )
    details: OllamaModelDetails


class OllamaTags(BaseModel):
    models: list[OllamaModel]


class OllamaVersion(BaseModel):
    version: str


# -- TEI's and vLLM's bodies ---------------------------------------------------------------------


class DecodeRequest(BaseModel):
    """POST /decode (TEI)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[int] | list[list[int]] = Field(description="One input's token ids, or a list of them.")
    skip_special_tokens: bool = Field(
        True, description="Leave out the special tokens (<|endoftext|>, [CLS], ...)."
    )


class DetokenizeRequest(BaseModel):
    """POST /detokenize (vLLM)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    tokens: list[int] = Field(description="Token ids; special tokens are kept in the text.")


class DetokenizeResponse(BaseModel):
    prompt: str


class VersionInfo(BaseModel):
    version: str
    model: str = Field(
        description="The served model's name (a local folder's name only, unless the request carries a valid key)."
    )
    backend: str
    device: str
    dtype: str


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra``: the body's schema inline (these models have no shared definitions)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _ollama_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {**what, "model": OllamaError} for s, what in errors(*statuses).items()}


# -- Ollama's routes --------------------------------------------------------------------------------


def ollama_errors(handler: Any) -> Any:
    """qembed's errors in Ollama's body ``{"error": message}``, with the same status, headers and counts."""

    @wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except (APIError, QembedError) as exc:
            err = exc if isinstance(exc, APIError) else from_qembed(exc)
            if err.status >= 500:
                log.error("request failed: %s", err.message)
            count(request, err)
            request.state.error = err.message
            return OrjsonResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    return run


def check_tagged(served: ServedModel, name: str | None) -> None:
    """``served.check`` for an Ollama name: ``name`` itself, else without its ``:tag``."""
    try:
        served.check(name)
    except APIError as exc:
        base, colon, tag = (name or "").rpartition(":")
        if not colon or not base or "/" in tag or "\\" in tag:
            raise
        try:
            served.check(base)
        except APIError:
            raise exc from None  # the message names what was sent


async def _ollama_embed(
    request: Request, name: str | None, texts: list[str], options: dict[str, Any], priority: Any = None
) -> Any:
    """``texts`` under the encode ``options`` (their given fields), as /embed would embed them."""
    state = request.app.state
    check_tagged(state.served, name)
    body = NativeEmbedRequest.model_construct(
        model=None, input=parse_inputs(texts), priority=priority, **options
    )
    inputs, encode = validate_request(
        body, served=state.served, max_client_batch_size=state.settings.max_client_batch_size
    )
    return await embed_validated(request, body, inputs, encode)


@ollama_errors
async def ollama_embed(request: Request) -> Response:
    """Ollama's ``POST /api/embed`` (the ollama client's ``embed``)."""
    start = time.perf_counter_ns()
    body = parse_body(OllamaEmbedRequest, await request.body())
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    model = body.model or request.app.state.served.name
    if body.input in ("", []):  # Ollama: no input loads the model and answers no embeddings
        check_tagged(request.app.state.served, body.model)
        return OrjsonResponse(
            {
                "model": model,
                "embeddings": [],
                "total_duration": 0,
                "load_duration": 0,
                "prompt_eval_count": 0,
            }
        )
    options = (
        body.encode_options().given()
    )  # TEI's `truncate` (the same meaning) may already be long_text here
    if "long_text" not in options:  # Ollama's default is truncate=true, not the server's --long-text
        options["long_text"] = "error" if body.truncate is False else "truncate"
    result = await _ollama_embed(request, body.model, texts, options, body.priority)
    return OrjsonResponse(
        {
            "model": model,
            "embeddings": np.ascontiguousarray(result.vectors, dtype=np.float32),
            "total_duration": time.perf_counter_ns() - start,
            "load_duration": 0,
            "prompt_eval_count": result.prompt_tokens,
        }
    )


@ollama_errors
async def ollama_embeddings(request: Request) -> Response:
    """Ollama's legacy ``POST /api/embeddings`` (one prompt, one embedding; long texts as the server's --long-text)."""
    body = parse_body(OllamaEmbeddingsRequest, await request.body())
    if not body.prompt:
        check_tagged(request.app.state.served, body.model)
        return OrjsonResponse({"embedding": []})
    result = await _ollama_embed(request, body.model, [body.prompt], {})
    return OrjsonResponse({"embedding": np.ascontiguousarray(result.vectors[0], dtype=np.float32)})


def _files(path: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the model's files (links followed: hub caches link to blobs)."""
    if path.is_file():
        s = path.stat()
        return [(path.name, s.st_size, s.st_mtime_ns)]
    out = []
    for root, _, names in os.walk(path, followlinks=True):
        for name in names:
            full = Path(root, name)
            try:
                s = full.stat()
            except OSError:
                continue
            out.append((str(full.relative_to(path)), s.st_size, s.st_mtime_ns))
    return sorted(out)


def _model_card(state: Any) -> dict[str, Any]:
    info = state.embedder.info
    try:
        files = _files(Path(info.path))
    except OSError:
        files = []
    modified = max((f[2] for f in files), default=state.started * 10**9) / 1e9
    name = state.served.name
    tagged = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:{TAG}"
    digest = hashlib.sha256(repr([info.model_id, *files]).encode("utf-8", "surrogateescape")).hexdigest()
    quantization = "INT8" if info.quantization else str(info.dtype).upper()
    family = info.model_type or "unknown"
    return {
        "name": tagged,
        "model": tagged,
        "modified_at": datetime.fromtimestamp(modified, UTC).isoformat().replace("+00:00", "Z"),
        "size": sum(f[1] for f in files),
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": info.backend,
            "family": family,
            "families": [family],
            "parameter_size": "",
            "quantization_level": quantization,
        },
    }


@ollama_errors
async def ollama_tags(request: Request) -> Response:
    """Ollama's ``GET /api/tags`` (the ollama client's ``list``): the one served model."""
    state = request.app.state
    card = getattr(state, "ollama_card", None)
    if card is None:
        card = state.ollama_card = await run_in_threadpool(_model_card, state)
    return OrjsonResponse({"models": [card]})


async def ollama_version(request: Request) -> Response:
    """Ollama's ``GET /api/version`` (qembed's version)."""
    return OrjsonResponse({"version": qembed.__version__})


# -- TEI's and vLLM's routes -------------------------------------------------------------------------


def _decode_all(state: Any, batch: list[list[int]], skip_special_tokens: bool, param: str) -> list[str]:
    vocab = state.embedder.tokenizer.vocab_size
    for i, ids in enumerate(batch):
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            where = f"{param}[{i}]" if len(batch) > 1 else param
            raise InputError(f"{where} has token id {bad}, outside the vocabulary [0, {vocab}).", param=param)
    decode = state.embedder.tokenizer.decode
    return [decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch]


async def decode(request: Request) -> Response:
    """TEI's ``POST /decode``: token ids (one list, or a list of lists) -> one text each."""
    state = request.app.state
    body = parse_body(DecodeRequest, await request.body())
    if not body.ids:
        raise APIError(
            400,
            "ids is an empty list; send token ids, or a list of lists of them.",
            param="ids",
            code="invalid_request",
        )
    batch: list[list[int]] = [body.ids] if isinstance(body.ids[0], int) else body.ids  # type: ignore[list-item]
    limit = state.settings.max_client_batch_size
    if len(batch) > limit:
        raise APIError(
            413,
            f"This request has {len(batch)} inputs; the limit is {limit} per request. Send fewer, or start the server with "
            "a larger --max-client-batch-size (env QEMBED_MAX_CLIENT_BATCH_SIZE).",
            param="ids",
            code="too_many_inputs",
        )
    request.state.inputs = len(batch)
    texts = await run_in_threadpool(_decode_all, state, batch, body.skip_special_tokens, "ids")
    return OrjsonResponse(texts)


async def detokenize(request: Request) -> Response:
    """vLLM's ``POST /detokenize``: token ids -> ``{"prompt": text}`` (special tokens kept)."""
    state = request.app.state
    body = parse_body(DetokenizeRequest, await request.body())
    state.served.check(body.model)
    request.state.inputs = 1
    texts = await run_in_threadpool(_decode_all, state, [body.tokens], False, "tokens")
    return OrjsonResponse({"prompt": texts[0]})


async def version(request: Request) -> Response:
    """qembed's version and what it serves (vLLM's and TEI's ``/version``-style check)."""
    state = request.app.state
    info = state.embedder.info
    show = (lambda name: name) if is_authenticated(request) else _folder_only
    return OrjsonResponse(
        {
            "version": qembed.__version__,
            "model": show(state.served.name),
            "backend": info.backend,
            "device": info.device,
            "dtype": info.dtype,
        }
    )


# -- the table ------------------------------------------------------------------------------------------

OLLAMA_EMBED_ERRORS = _ollama_errors(400, 401, 404, 413, 429, 500, 503)
_ROUTES: list[tuple[str, Any, str, Any, Any, dict[int | str, dict[str, Any]], str]] = [
    (
        "/api/embed",
        ollama_embed,
        "POST",
        OllamaEmbedRequest,
        OllamaEmbedResponse,
        OLLAMA_EMBED_ERRORS,
        "Embed (Ollama)",
    ),
    (
        "/api/embeddings",
        ollama_embeddings,
        "POST",
        OllamaEmbeddingsRequest,
        OllamaEmbeddingsResponse,
        OLLAMA_EMBED_ERRORS,
        "Embed one prompt (Ollama, legacy)",
    ),
    (
        "/api/tags",
        ollama_tags,
        "GET",
        None,
        OllamaTags,
        _ollama_errors(401),
        "The served model (Ollama's model list)",
    ),
    ("/decode", decode, "POST", DecodeRequest, list[str], errors(400, 401, 413), "Token ids to texts (TEI)"),
    (
        "/detokenize",
        detokenize,
        "POST",
        DetokenizeRequest,
        DetokenizeResponse,
        errors(400, 401, 404),
        "Token ids to text (vLLM)",
    ),
    (
        "/v1/tokenize",
        tokenize,
        "POST",
        TokenizeRequest,
        TokenizeResponse,
        errors(400, 401, 404, 413, 429, 503),
        "Token ids the model reads (alias of /tokenize)",
    ),
]
for _path, _handler, _method, _request, _response, _errors, _summary in _ROUTES:
    router.add_api_route(
        _path,
        _handler,
        methods=[_method],
        response_model=_response,
        responses=_errors,
        openapi_extra=_body(_request) if _request is not None else None,
        operation_id="compat_" + _path.strip("/").replace("/", "_"),
        summary=_summary,
    )
open_router.add_api_route(
    "/version",
    version,
    methods=["GET"],
    response_model=VersionInfo,
    operation_id="compat_version",
    summary="qembed's version and the served model",
)
open_router.add_api_route(
    "/api/version",
    ollama_version,
    methods=["GET"],
    response_model=OllamaVersion,
    operation_id="compat_api_version",
    summary="qembed's version (Ollama's shape)",
)
