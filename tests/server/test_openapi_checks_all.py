"""schemathesis with every check (``--checks all``), positive and negative, against the
schema the server serves: valid requests (by the schema) are accepted, invalid ones
refused with a documented 4xx, and no answer is undocumented or a 5xx.

So the served schema is exactly what the validators accept: ``input`` has no empty text,
list or token list (``[[]]`` was schema-valid and refused), token ids are within the
served vocabulary, lists of inputs within --max-client-batch-size, ``dimensions`` within
what the model allows, ``task``/``prompt_name`` from the model's lists, at most one of
prompt_name/prompt/instruction/task, and the search routes document 400 (not FastAPI's 422).

Three rules no JSON Schema can carry are set aside: the server runs with
--allow-foreign-token-ids (whether ids are *this* tokenizer's own tokenization is the
model's to say); a 400 naming two peer-compatibility fields that contradict each other
("... contradicts ...") and a 400 for a document id given twice in one /v1/index request
("... appears twice ...": uniqueness of a field across array items) are accepted as the
refusals they document.

The operations are qembed's own (OpenAI, native, search, operations); peer-compatibility
routes are tested by their own files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from qembed import Embedder
from qembed.server.app import create_app

from .conftest import settings_for
from .test_http_edges import Served

EXAMPLES = 20
OPERATIONS = {
    "/v1/embeddings", "/embeddings", "/embed", "/tokenize", "/v1/search", "/v1/index",
    "/v1/models", "/models", "/health", "/ready", "/info", "/metrics",
}  # fmt: skip


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    embedder = Embedder(str(tiny_model_dir), device="cpu", allow_foreign_token_ids=True)
    settings = settings_for(
        tiny_model_dir,
        index="checks",
        data_dir=str(tmp_path_factory.mktemp("index")),
        max_client_batch_size=64,
    )
    server = Served(create_app(settings, embedder), settings)
    server.__enter__()
    yield server
    server.__exit__(None, None, None)


def accepts_valid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """``positive_data_acceptance``, except the two cross-field refusals of the module doc."""
    if response.status_code == 400 and (
        "contradicts" in response.text or "appears twice in the request" in response.text
    ):
        return None
    return positive_data_acceptance(ctx, response, case)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_check_passes(served: Served, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    ops = [op for op in ops if op.path in OPERATIONS]
    assert {op.path for op in ops} == OPERATIONS
    seen: dict[str, set[int]] = {}
    for op in ops:
        if mode is GenerationMode.NEGATIVE and op.method.upper() != "POST":
            continue  # a GET without parameters has nothing to get wrong

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            if mode is GenerationMode.POSITIVE:
                response = case.call_and_validate(
                    timeout=120,
                    excluded_checks=[positive_data_acceptance],
                    additional_checks=[accepts_valid_data],
                )
            else:
                response = case.call_and_validate(timeout=120)
            seen.setdefault(case.operation.label, set()).add(response.status_code)

        run()
    posted = set().union(*(v for k, v in seen.items() if k.startswith("POST")))
    if mode is GenerationMode.POSITIVE:
        assert 200 in posted, seen
    else:
        assert posted and all(400 <= s < 500 for s in posted), seen


def test_schema_carries_the_served_limits(served: Served) -> None:
    import httpx

    schema = httpx.get(served.url + "/openapi.json", timeout=10).json()
    components = schema["components"]["schemas"]
    request = components["EmbeddingRequest"]
    branches = request["properties"]["input"]["anyOf"]
    assert all(b.get("minItems") == 1 or b.get("minLength") == 1 for b in branches)
    token_list = next(b for b in branches if b["type"] == "array" and b["items"].get("type") == "integer")
    assert token_list["items"]["minimum"] == 0 and token_list["items"]["maximum"] > 1000
    assert all(
        b.get("maxItems") == 64
        for b in branches
        if b["type"] == "array" and b["items"].get("type") != "integer"
    )
    dims = next(b for b in request["properties"]["dimensions"]["anyOf"] if b.get("type") == "integer")
    assert dims["minimum"] == 32 and dims["maximum"] == 64
    assert "not" in request  # at most one of prompt_name, prompt, instruction, task
    assert "x-token-id" not in str(schema) and "x-inputs" not in str(schema)
    for path in ("/v1/search", "/v1/index"):
        responses = schema["paths"][path]["post"]["responses"]
        assert "400" in responses and "422" not in responses
