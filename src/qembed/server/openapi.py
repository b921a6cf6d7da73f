"""What the OpenAPI schema says about bodies and errors, and the orjson response.

Routes read their bodies themselves (``schemas.parse_body``), so FastAPI cannot see the
request models; ``request_body`` declares them and ``install`` adds their JSON schemas
to the components, so the docs page and schemathesis see every field.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.responses import Response

from qembed.server.errors import ErrorResponse

REF = "#/components/schemas/{model}"


class OrjsonResponse(Response):
    """JSON via orjson; numpy arrays serialize directly (no per-float Python objects)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status with the OpenAI error body."""
    what = {
        400: "Invalid request: bad JSON, wrong types, empty input, token id out of vocabulary, dimensions out of range, input too long under long_text=error, unknown prompt_name or task.",
        401: "Missing or wrong API key (only when the server has --api-key).",
        404: "The `model` named is not the one served.",
        413: "Body over --payload-limit, or more inputs than --max-client-batch-size.",
        429: "The queue is full (--max-queued-tokens / --max-concurrent-requests); see Retry-After.",
        500: "The model failed or produced non-finite values.",
        503: "Not ready yet, or shutting down.",
    }
    return {s: {"model": ErrorResponse, "description": what[s]} for s in statuses}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body is ``model``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    }


def _bound(node: Any, vocab_size: int | None, max_items: int | None) -> None:
    """The served limits in the schema: token ids (``x-token-id``) index the vocabulary,
    [0, vocab_size); one request's inputs (``x-inputs``) are at most ``max_items``."""
    if isinstance(node, dict):
        if node.pop("x-token-id", False) and vocab_size is not None:
            node.update(minimum=0, maximum=vocab_size - 1)
        if node.pop("x-inputs", False) and max_items is not None:
            node["maxItems"] = max_items
        for value in node.values():
            _bound(value, vocab_size, max_items)
    elif isinstance(node, list):
        for value in node:
            _bound(value, vocab_size, max_items)


def _errors_are_openai_bodies(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 for every body; qembed answers a client mistake with 400 (and
    the gate's 401/413/429/503 apply to every route with a body)."""
    ref = {"$ref": REF.format(model="ErrorResponse")}
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            if "requestBody" in operation:
                for status, description in (
                    (400, "Invalid request."),
                    (401, "Missing or wrong API key."),
                    (413, "Body over --payload-limit."),
                ):
                    responses.setdefault(
                        str(status),
                        {"description": description, "content": {"application/json": {"schema": ref}}},
                    )
    schemas = schema.get("components", {}).get("schemas", {})
    schemas.setdefault("ErrorResponse", ErrorResponse.model_json_schema(ref_template=REF))
    used = orjson.dumps(schema.get("paths", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        if name.encode() not in used:
            schemas.pop(name, None)


def _narrow_options(
    schemas: dict[str, Any], names: list[str], options: dict[str, dict[str, Any]], exclusive: tuple[str, ...]
) -> None:
    """The served model's facts on the options of ``names``' schemas: e.g. ``dimensions``
    within [min_dimensions, dimension], ``prompt_name`` one of its prompts; and at most one
    of ``exclusive`` given (not null)."""
    given = {"not": {"type": "null"}}
    pairs = [(a, b) for i, a in enumerate(exclusive) for b in exclusive[i + 1 :]]
    for name in names:
        if pairs and name in schemas:
            schemas[name]["not"] = {
                "anyOf": [{"required": [a, b], "properties": {a: given, b: given}} for a, b in pairs]
            }
        properties = schemas.get(name, {}).get("properties", {})
        for option, facts in options.items():
            prop = properties.get(option)
            if prop is None:
                continue
            for branch in prop.get("anyOf", [prop]):
                if branch.get("type") != "null":
                    branch.update(facts)


def install(
    app: FastAPI,
    body_models: list[type[BaseModel]],
    *,
    vocab_size: int | None = None,
    max_inputs: int | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    exclusive: tuple[str, ...] = (),
) -> None:
    """Generate the schema once, with the request models' schemas in the components and the
    served limits in them: token ids bounded by ``vocab_size`` (the served tokenizer's),
    inputs per request by ``max_inputs`` (--max-client-batch-size), and ``options`` (JSON
    Schema facts per option name, from the served model) on the body models' options, of
    which at most one of ``exclusive`` may be given."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema([(m, "validation") for m in body_models], ref_template=REF)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            copy.deepcopy(defs.get("$defs", {}))
        )
        schema = copy.deepcopy(schema)  # (schema dicts from WithJsonSchema are shared by every app)
        _bound(schema, vocab_size, max_inputs)
        _narrow_options(
            schema["components"]["schemas"], [m.__name__ for m in body_models], options or {}, exclusive
        )
        _errors_are_openai_bodies(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
