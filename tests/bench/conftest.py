"""An OpenAI-compatible endpoint for load-generator tests: real vectors from the tiny
model, plus deterministic failures (every k-th request answers 429) so that the error
accounting can be checked exactly. The bench targets *any* OpenAI-compatible server; this
one is small enough to run in a thread of the test process."""

# No `from __future__ import annotations`: FastAPI must see the real Request type of the
# handler defined inside the fixture.

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Endpoint:
    url: str
    fail_every: int = 0  # 0: never fail
    requests: int = 0
    failures: int = 0
    inputs: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, fail_every: int = 0) -> None:
        with self.lock:
            self.fail_every, self.requests, self.failures, self.inputs = fail_every, 0, 0, []


@pytest.fixture(scope="session")
def openai_endpoint(tiny_embedder) -> Iterator[Endpoint]:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from qembed.bench.procs import free_port

    port = free_port()
    endpoint = Endpoint(f"http://127.0.0.1:{port}")
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": "tiny", "object": "model"}]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        with endpoint.lock:
            endpoint.requests += 1
            fail = endpoint.fail_every and endpoint.requests % endpoint.fail_every == 0
            if fail:
                endpoint.failures += 1
            else:
                endpoint.inputs.append(len(texts))
        if fail:
            return JSONResponse(
                {"error": {"message": "slow down", "type": "rate_limit", "code": 429}}, status_code=429
            )
        result = tiny_embedder.encode_with_usage(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(result.vectors)
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": "tiny",
                "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
            }
        )

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test endpoint did not start")
        thread.join(timeout=0.05)
    yield endpoint
    server.should_exit = True
    thread.join(timeout=10)
