"""What the OpenAPI schema says about bodies and errors, and the orjson response.

Routes read their bodies themselves (``schemas.parse_body``), so FastAPI cannot see the
request models; ``request_body`` declares them and ``install`` adds their JSON schemas
to the components, so the docs page and schemathesis see every field.
"""

from __future__ import annotations

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


def install(app: FastAPI, body_models: list[type[BaseModel]]) -> None:
    """Generate the schema once, with the request models' schemas in the components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, defs = models_json_schema([(m, "validation") for m in body_models], ref_template=REF)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
