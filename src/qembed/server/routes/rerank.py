"""The rerank routes, over the reranker served beside the embedder (``--rerank-model``):

- ``POST /v1/rerank`` (and ``/v2/rerank``): the Cohere/Jina shape that sglang and vLLM also
  serve -- ``query``, ``documents`` (strings or ``{"text": ...}``), ``top_n``,
  ``return_documents`` -> ``results[{index, relevance_score, document?}]``, best first;
- ``POST /rerank``: TEI's shape -- ``query``, ``texts``, ``raw_scores``, ``return_text``,
  ``truncate`` -> ``[{index, score, text?}]``, best first;
- ``POST /score`` and ``/v1/score``: vLLM's -- ``text_1``, ``text_2`` (a string or a list
  each) -> ``data[{index, object: "score", score}]`` in pair order.

Every shape is one call of ``RerankService.score`` (the reranker's queue and model thread),
behind the API key, with the OpenAI error body for every mistake. Without a reranker the
routes answer 404 saying how to start one, and stay out of the OpenAPI schema (the schema
says what the server accepts).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from qembed.errors import InputError, RequestTooLarge
from qembed.rerank.protocol import RerankModelInfo
from qembed.server.auth import require_api_key
from qembed.server.disconnect import unless_disconnected
from qembed.server.errors import APIError
from qembed.server.openapi import OrjsonResponse, errors, request_body
from qembed.server.routes.embeddings import PRIORITY_HEADER
from qembed.server.schemas import ServedModel, Usage, parse_body
from qembed.serving.rerank_service import RerankResult, RerankService, check_pairs_input

RERANK_ERRORS = errors(400, 401, 404, 413, 429, 500, 503)
NO_RERANKER = (
    "No reranker is served here. Start the server with one beside the embedder: "
    "qembed serve --model <embedder> --rerank-model Qwen/Qwen3-Reranker-0.6B (or a sentence-transformers "
    "cross-encoder; env QEMBED_RERANK_MODEL)."
)
_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": r"\S"}  # what check_pairs_input accepts


# -- request bodies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Documents:
    """A request's documents: the texts to score, and what the caller sent for each (Cohere
    returns a ``{"text", ...}`` document as it was given)."""

    texts: list[str]
    sent: list[dict[str, Any] | None]


def _documents(value: Any) -> Documents:
    """Strings or ``{"text": string, ...}`` objects; one message naming the first bad one."""
    if not isinstance(value, list):
        raise PydanticCustomError(
            "invalid_input", 'documents must be a list of strings or {"text": ...} objects.'
        )
    texts: list[str] = []
    sent: list[dict[str, Any] | None] = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(item["text"])
            sent.append(item)
        elif isinstance(item, str):
            texts.append(item)
            sent.append(None)
        else:
            what = (
                "an object without a string 'text'" if isinstance(item, dict) else f"a {type(item).__name__}"
            )
            raise PydanticCustomError(
                "invalid_input",
                'documents[{i}] is {what}; each document is a string or {{"text": string}}.',
                {"i": i, "what": what},
            )
    return Documents(texts, sent)


def _texts(value: Any) -> list[str]:
    """A list of strings (TEI's ``texts``); the emptiness checks are the service's."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PydanticCustomError("invalid_input", "texts must be a list of strings.")
    return value


def _one_or_many(value: Any) -> list[str]:
    """vLLM's ``text_1``/``text_2``: a string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise PydanticCustomError("invalid_input", "must be a string or a non-empty list of strings.")


DocumentsField = Annotated[
    Documents,
    PlainValidator(_documents),
    WithJsonSchema(
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    _TEXT,
                    {
                        "type": "object",
                        "properties": {"text": _TEXT},
                        "required": ["text"],
                        "additionalProperties": True,
                    },
                ]
            },
            "x-inputs": True,
            "description": "The documents to rank: strings, or objects with a `text` (returned as sent).",
        }
    ),
]
TextsField = Annotated[
    list[str],
    PlainValidator(_texts),
    WithJsonSchema({"type": "array", "minItems": 1, "items": _TEXT, "x-inputs": True}),
]
OneOrMany = Annotated[
    list[str],
    PlainValidator(_one_or_many),
    WithJsonSchema({"anyOf": [_TEXT, {"type": "array", "minItems": 1, "items": _TEXT, "x-inputs": True}]}),
]


class _RerankOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, description="The served reranker's name; optional.")
    instruction: str | None = Field(
        None,
        json_schema_extra={"pattern": r"\S"},
        description="Qwen3-Reranker: the task instruction (default: --rerank-instruction, else the model card's). "
        "Cross-encoders take none.",
    )
    long_text: Literal["truncate", "error"] | None = Field(
        None,
        description="A pair longer than --rerank-max-length: truncate the document's end (the prompt and query are "
        "kept), or error. Default: the server's --long-text (error stays error, anything else truncates).",
    )
    priority: Literal["interactive", "bulk"] | None = Field(
        None,
        description="interactive (default) or bulk, as on /v1/embeddings. Also the X-Qembed-Priority header.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _json_integer(cls, value: Any) -> Any:
        """JSON's ``3.0`` is the integer 3 (JSON Schema says so: the schema's ``top_n``); 2.5 stays refused."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


class RerankRequest(_RerankOptions):
    """POST /v1/rerank (Cohere, Jina, sglang, vLLM)."""

    query: str = Field(
        json_schema_extra=dict(_TEXT), description="The text the documents are ranked against."
    )
    documents: DocumentsField
    top_n: int | None = Field(None, ge=1, description="Return the best N (default: every document).")
    return_documents: bool = Field(False, description="Include each document in its result.")
    max_tokens_per_doc: int | None = Field(
        None,
        ge=1,
        description="Cohere v2: cut each document after its first N tokens (the reranker's tokenizer) before "
        "scoring; the returned document stays whole.",
    )


class TEIRerankRequest(_RerankOptions):
    """POST /rerank (text-embeddings-inference)."""

    query: str = Field(json_schema_extra=dict(_TEXT))
    texts: TextsField
    raw_scores: bool = Field(False, description="The model's raw logit instead of the relevance in [0, 1].")
    return_text: bool = Field(False, description="Include each text in its result.")
    truncate: bool | None = Field(None, description="true: long_text 'truncate'; false: 'error'.")
    truncation_direction: Literal["right", "Right"] | None = Field(
        None, description="Only right: the document's end is cut (the query and prompt are kept)."
    )


class ScoreRequest(_RerankOptions):
    """POST /score, /v1/score (vLLM): ``text_1`` against ``text_2``, one score per pair."""

    text_1: OneOrMany = Field(description="The query (or one query per text_2).")
    text_2: OneOrMany = Field(description="The documents; with a list text_1, as many as text_1.")


# -- responses (documented shapes) -------------------------------------------------------------


class RerankResultItem(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResultItem]
    usage: Usage


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


BODY_MODELS: list[type[BaseModel]] = [RerankRequest, TEIRerankRequest, ScoreRequest]


# -- the served reranker's names ------------------------------------------------------------------


def rerank_served(info: RerankModelInfo, *, requested: str | None, embedder: ServedModel) -> ServedModel:
    """The names a rerank request's ``model`` may use (hub id, its last part, the name given
    to --rerank-model); the embedder's names answer a clear 400 (the other kind of model)."""
    names = {info.model_id, info.model_id.rsplit("/", 1)[-1]}
    if requested:
        names |= {requested, Path(requested.rstrip("/")).name}
    accepted = frozenset(n.lower() for n in names if n)
    hint = (
        f"is the embedding model served here, not a reranker: send it to /v1/embeddings, or send model "
        f"{info.model_id!r} (or omit model) here."
    )
    return ServedModel(
        name=info.model_id,
        model_id=info.model_id,
        accepted=accepted,
        others=tuple((name, hint) for name in sorted(embedder.accepted - accepted)),
    )


def embedder_hint(reranker: ServedModel, embedder: ServedModel) -> tuple[tuple[str, str], ...]:
    """What /v1/embeddings says when a request names the reranker."""
    hint = (
        f"is the reranker served here, not an embedding model: send it to /v1/rerank (or /rerank, /score), or send "
        f"model {embedder.name!r} (or omit model) here."
    )
    return tuple((name, hint) for name in sorted(reranker.accepted - embedder.accepted))


# -- the routes ---------------------------------------------------------------------------------------


def _service(request: Request) -> tuple[RerankService, ServedModel]:
    state = request.app.state
    service: RerankService | None = getattr(state, "rerank_service", None)
    if service is None:
        raise APIError(404, NO_RERANKER, param="model", code="reranker_not_served")
    return service, state.rerank_served


async def _score(
    request: Request,
    body: _RerankOptions,
    query_docs: Sequence[tuple[str, str]],
    *,
    long_text: Literal["truncate", "error"] | None,
    max_doc_tokens: int | None = None,
) -> RerankResult:
    """One validated body through the reranker's queue: the model name, the client-disconnect
    watch, the access log's and the metrics' counts."""
    service, served = _service(request)
    served.check(body.model)
    request.state.inputs = len(query_docs)
    bulk = (body.priority or request.headers.get(PRIORITY_HEADER, "interactive")).strip().lower() == "bulk"
    result = await unless_disconnected(
        request,
        service.score(
            query_docs,
            instruction=body.instruction,
            long_text=long_text,
            bulk=bulk,
            max_doc_tokens=max_doc_tokens,
        ),
    )
    request.state.tokens = result.prompt_tokens
    metrics = request.app.state.metrics
    metrics.rerank_documents.labels(model=served.name).inc(len(query_docs))
    metrics.rerank_prompt_tokens.labels(model=served.name).inc(result.prompt_tokens)
    return result


def _order(result: RerankResult) -> list[int]:
    """Best first by the raw logit (the sigmoid rounds big logits to one 1.0); ties keep the caller's order."""
    return sorted(range(len(result.raw)), key=lambda i: (-float(result.raw[i]), i))


def _checked(request: Request, query: Any, texts: list[str], field: str = "documents") -> None:
    service, _ = _service(request)
    check_pairs_input(query, texts, max_documents=service.settings.max_client_batch_size, field=field)


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


async def cohere_rerank(request: Request) -> Response:
    """Rank documents against a query (Cohere's `client.rerank`, Jina, sglang, vLLM)."""
    _service(request)
    body = parse_body(RerankRequest, await request.body())
    docs: Documents = body.documents
    _checked(request, body.query, docs.texts)
    result = await _score(
        request,
        body,
        [(body.query, d) for d in docs.texts],
        long_text=body.long_text,
        max_doc_tokens=body.max_tokens_per_doc,
    )
    order = _order(result)[: body.top_n or len(docs.texts)]
    results = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": float(result.scores[i])}
        if body.return_documents:
            item["document"] = docs.sent[i] if docs.sent[i] is not None else {"text": docs.texts[i]}
        results.append(item)
    return OrjsonResponse(
        {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": request.app.state.rerank_served.name,
            "results": results,
            "usage": _usage(result.prompt_tokens),
        }
    )


async def tei_rerank(request: Request) -> Response:
    """TEI's /rerank: a list of {index, score, text?}, best first."""
    _service(request)
    body = parse_body(TEIRerankRequest, await request.body())
    _checked(request, body.query, body.texts, "texts")
    long_text = body.long_text
    if body.truncate is not None:
        mapped: Literal["truncate", "error"] = "truncate" if body.truncate else "error"
        if long_text is not None and long_text != mapped:
            raise InputError(
                f"truncate={str(body.truncate).lower()} contradicts long_text={long_text!r}; send one of them.",
                param="truncate",
            )
        long_text = mapped
    result = await _score(request, body, [(body.query, t) for t in body.texts], long_text=long_text)
    values = result.raw if body.raw_scores else result.scores
    out = []
    for i in _order(result):
        item: dict[str, Any] = {"index": i, "score": float(values[i])}
        if body.return_text:
            item["text"] = body.texts[i]
        out.append(item)
    return OrjsonResponse(out)


def score_pairs(text_1: list[str], text_2: list[str]) -> list[tuple[str, str]]:
    """vLLM's pairing: one text_1 against every text_2, or text_1[i] with text_2[i]."""
    if len(text_1) == 1:
        return [(text_1[0], t) for t in text_2]
    if len(text_1) != len(text_2):
        raise InputError(
            f"text_1 has {len(text_1)} texts and text_2 {len(text_2)}; send one text_1 (scored against every "
            "text_2) or as many as text_2 (scored pairwise).",
            param="text_2",
        )
    return list(zip(text_1, text_2, strict=True))


async def vllm_score(request: Request) -> Response:
    """vLLM's /score: one relevance per (text_1, text_2) pair, in pair order."""
    _service(request)
    body = parse_body(ScoreRequest, await request.body())
    for name, texts in (("text_1", body.text_1), ("text_2", body.text_2)):
        for i, text in enumerate(texts):
            if not text.strip():
                raise InputError(f"{name}[{i}] is empty; send text to score.", param=name)
    pairs = score_pairs(body.text_1, body.text_2)
    service, _ = _service(request)
    limit = service.settings.max_client_batch_size
    if len(pairs) > limit:
        raise RequestTooLarge(
            f"This request has {len(pairs)} pairs; the limit is {limit} per request. Send fewer, or start the "
            "server with a larger --max-client-batch-size (env QEMBED_MAX_CLIENT_BATCH_SIZE).",
            param="text_2",
        )
    result = await _score(request, body, pairs, long_text=body.long_text)
    data = [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(result.scores)]
    return OrjsonResponse(
        {
            "id": f"score-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": request.app.state.rerank_served.name,
            "data": data,
            "usage": _usage(result.prompt_tokens),
        }
    )


def make_router(*, documented: bool) -> APIRouter:
    """The rerank routes; ``documented`` (a reranker is served) puts them in the OpenAPI schema."""
    router = APIRouter(dependencies=[Depends(require_api_key)], tags=["rerank"])
    common: dict[str, Any] = {
        "methods": ["POST"],
        "responses": RERANK_ERRORS,
        "include_in_schema": documented,
    }
    for path, op in (("/v1/rerank", "rerank"), ("/v2/rerank", "rerank_v2")):
        router.add_api_route(
            path,
            cohere_rerank,
            response_model=RerankResponse,
            openapi_extra=request_body(RerankRequest),
            operation_id=op,
            summary="Rerank documents (Cohere / Jina / vLLM / sglang)",
            **common,
        )
    router.add_api_route(
        "/rerank",
        tei_rerank,
        response_model=list[TEIRank],
        openapi_extra=request_body(TEIRerankRequest),
        operation_id="rerank_tei",
        summary="Rerank texts (text-embeddings-inference)",
        **common,
    )
    for path, op in (("/v1/score", "score"), ("/score", "score_no_prefix")):
        router.add_api_route(
            path,
            vllm_score,
            response_model=ScoreResponse,
            openapi_extra=request_body(ScoreRequest),
            operation_id=op,
            summary="Score text pairs (vLLM)",
            **common,
        )
    return router
