"""schemathesis against the OpenAPI schema the server serves: generated valid and invalid
requests for every operation; no 5xx, and every status and body is one the schema documents.
Bounded (a few examples per operation and mode, no shrinking) so that it runs in seconds.

(Driven through ``as_strategy`` + hypothesis directly: schemathesis' lazy pytest
integration does not run under pytest 9.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 25


@pytest.fixture(scope="module")
def api_schema(live_server):
    return schemathesis.openapi.from_url(live_server.url + "/openapi.json")


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_server_errors_and_documented_answers(api_schema, mode: GenerationMode) -> None:
    ops = operations(api_schema)
    assert {op.path for op in ops} >= {
        "/v1/embeddings",
        "/embeddings",
        "/embed",
        "/tokenize",
        "/v1/models",
        "/health",
        "/ready",
        "/info",
        "/metrics",
    }
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    if mode is GenerationMode.POSITIVE:
        checks.append(response_schema_conformance)
    seen: dict[str, set[int]] = {}

    for op in ops:
        if mode is GenerationMode.NEGATIVE and op.method.upper() != "POST":
            continue  # nothing to get wrong in a GET without parameters

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case) -> None:
            response = case.call_and_validate(checks=checks, timeout=60)
            seen.setdefault(case.operation.label, set()).add(response.status_code)

        run()
    # The generated requests reached the handlers: invalid ones were refused with a 4xx,
    # and (positive mode) some valid embedding requests were served.
    posted = set().union(*(v for k, v in seen.items() if k.startswith("POST")))
    assert any(400 <= s < 500 for s in posted), seen
    if mode is GenerationMode.POSITIVE:
        assert 200 in posted, seen
