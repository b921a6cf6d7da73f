"""A minimal OpenAI-compatible embeddings client that records what happened to each request.

The load generator and the HTTP engine of the throughput bench need more than a library
client gives: the latency of every request, the status code of every failure (a 429 is
not a 503), the server's own token count (``usage.prompt_tokens``) to check against the
tokens we sent, and no retries that would hide errors. So it is a thin layer over httpx.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import orjson


def embeddings_url(endpoint: str) -> str:
    """``http://h:p``, ``http://h:p/v1`` or ``.../v1/embeddings`` -> the embeddings URL."""
    url = endpoint.rstrip("/")
    if url.endswith("/embeddings"):
        return url
    if url.endswith("/v1"):
        return url + "/embeddings"
    return url + "/v1/embeddings"


def models_url(endpoint: str) -> str:
    return embeddings_url(endpoint)[: -len("embeddings")] + "models"


@dataclass(frozen=True)
class Outcome:
    """One request: ``status`` is the HTTP code, or ``transport:<Error>`` when none came back."""

    status: int | str
    latency_s: float
    ok: bool
    n_inputs: int
    n_vectors: int = 0
    dimension: int = 0
    prompt_tokens: int | None = None
    error: str | None = None
    finished_at: float = 0.0

    @property
    def status_key(self) -> str:
        return str(self.status)


class EmbeddingsClient:
    """POSTs ``{"model", "input"}`` and validates the answer (one vector per input)."""

    def __init__(
        self, endpoint: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 120.0, encoding_format: str = "float"
    ) -> None:
        self.url = embeddings_url(endpoint)
        self.model = model
        self.timeout = timeout
        self.encoding_format = encoding_format
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def resolve_model(self) -> str:
        """The model name to send: the one given, else the first of GET /v1/models."""
        if self.model:
            return self.model
        try:
            response = httpx.get(models_url(self.url), headers=self.headers, timeout=min(self.timeout, 10.0))
            data = response.json().get("data") or []
            if response.status_code == 200 and data and data[0].get("id"):
                self.model = str(data[0]["id"])
                return self.model
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        self.model = "default"
        return self.model

    def body(self, texts: list[str]) -> bytes:
        payload: dict[str, object] = {"model": self.model or "default", "input": texts}
        if self.encoding_format != "float":
            payload["encoding_format"] = self.encoding_format
        return orjson.dumps(payload)

    def judge(self, status: int, content: bytes, n_inputs: int, began: float) -> Outcome:
        now = time.perf_counter()
        latency = now - began
        if status != 200:
            return Outcome(status, latency, False, n_inputs, error=content[:300].decode(errors="replace"), finished_at=now)
        try:
            data = orjson.loads(content)
            items = data["data"]
            dims = {len(item["embedding"]) for item in items}
            usage = data.get("usage") or {}
            tokens = usage.get("prompt_tokens")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return Outcome("invalid-body", latency, False, n_inputs, error=f"{type(exc).__name__}: {exc}", finished_at=now)
        if len(items) != n_inputs or len(dims) != 1 or 0 in dims:
            return Outcome(
                "invalid-body", latency, False, n_inputs, len(items), error=f"{len(items)} vectors of sizes {sorted(dims)} for {n_inputs} inputs", finished_at=now
            )
        return Outcome(200, latency, True, n_inputs, len(items), dims.pop(), int(tokens) if isinstance(tokens, int) else None, finished_at=now)

    async def embed(self, client: httpx.AsyncClient, texts: list[str]) -> Outcome:
        body = self.body(texts)
        began = time.perf_counter()
        try:
            response = await client.post(self.url, content=body, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            now = time.perf_counter()
            return Outcome(f"transport:{type(exc).__name__}", now - began, False, len(texts), error=str(exc)[:300], finished_at=now)
        return self.judge(response.status_code, response.content, len(texts), began)

    def vectors_sync(self, client: httpx.Client, texts: list[str]) -> list[list[float]]:
        """The vectors themselves (to check that a server computes what the others do)."""
        response = client.post(self.url, content=self.body(texts), headers=self.headers, timeout=self.timeout)
        response.raise_for_status()
        items = sorted(orjson.loads(response.content)["data"], key=lambda item: item.get("index", 0))
        return [item["embedding"] for item in items]

    def embed_sync(self, client: httpx.Client, texts: list[str]) -> Outcome:
        body = self.body(texts)
        began = time.perf_counter()
        try:
            response = client.post(self.url, content=body, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            now = time.perf_counter()
            return Outcome(f"transport:{type(exc).__name__}", now - began, False, len(texts), error=str(exc)[:300], finished_at=now)
        return self.judge(response.status_code, response.content, len(texts), began)
