"""The OpenAI-compatible embeddings client: one URL normaliser, one parser, one error text.

Every part of qembed that talks to an embeddings server (``qembed eval --endpoint``, the
bench's load generator and HTTP engine) goes through ``OpenAIClient``:

- ``base_url`` accepts ``http://h:p``, ``http://h:p/``, ``http://h:p/v1`` and
  ``.../v1/embeddings`` and gives ``http://h:p/v1``;
- a failure says what went wrong: the URL, the status and the server's own OpenAI error
  message (``{"error": {"message": ...}}``), or the transport error when nothing came back;
- retries happen only when asked for (``retries=``: eval retries 429/502/503/504 after
  ``Retry-After``; the bench never retries, a retry would hide the error it counts);
- ``attempt``/``attempt_async`` never raise: they return an ``Outcome`` with the latency
  and the status of one request, which is what a load generator records.

``HttpEncoder`` is the client as a ``qembed.embedding.protocol.TextEncoder``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson

from qembed.embedding.protocol import Encoded, Role
from qembed.errors import InputError, QembedError

RETRY_STATUS = frozenset({429, 502, 503, 504})


class ClientError(QembedError):
    """An endpoint failed or answered something that is not embeddings.

    ``status``: the HTTP status, ``"transport"`` when no answer came back, ``"invalid-body"``
    when the answer is not an embeddings response."""

    code = "client_error"

    def __init__(self, message: str, *, status: int | str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


# -- URLs --------------------------------------------------------------------------------
def base_url(endpoint: str) -> str:
    """'http://h:p', 'http://h:p/', 'http://h:p/v1' or '.../v1/embeddings' -> 'http://h:p/v1'.

    A URL that names the embeddings route itself is taken as given: its folder is the base,
    ``/v1`` or not (``http://h:p/embeddings`` -> ``http://h:p``). Anything else gets ``/v1``
    unless it ends with it."""
    url = endpoint.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"endpoint must start with http:// or https://, not {endpoint!r}.", param="endpoint")
    if url.endswith("/embeddings"):
        return url[: -len("/embeddings")]
    if not url.endswith("/v1"):
        url += "/v1"
    return url


def embeddings_url(endpoint: str) -> str:
    return base_url(endpoint) + "/embeddings"


def models_url(endpoint: str) -> str:
    return base_url(endpoint) + "/models"


def server_root(endpoint: str) -> str:
    """The server's own root, where qembed serves /info, /metrics, /ready."""
    url = base_url(endpoint)
    return url[: -len("/v1")] if url.endswith("/v1") else url


# -- answers -----------------------------------------------------------------------------
def error_message(content: bytes | str, limit: int = 500) -> str:
    """The server's message from an OpenAI error body, else the start of the body."""
    text = content.decode(errors="replace") if isinstance(content, bytes) else content
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text[:limit]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:limit]
        return str(error)[:limit]
    return str(body)[:limit]


def _row(embedding: Any) -> Any:
    if isinstance(embedding, str):  # encoding_format=base64: little-endian float32
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return embedding


def _loads(content: bytes | str) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)  # NaN/Infinity literals (orjson refuses them): said as such below


def parse_embeddings(content: bytes | str, expected: int) -> Encoded:
    """An OpenAI embeddings body -> ``Encoded``, checked: one finite row per input, in index order."""
    try:
        body = _loads(content)
        items = body["data"]
        order = sorted(range(len(items)), key=lambda i: items[i].get("index", i))
        vectors = np.asarray([_row(items[i]["embedding"]) for i in order], dtype=np.float32)
        usage = body.get("usage") or {}
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise ClientError(
            f"the answer is not an OpenAI embeddings response ({exc!r}).", status="invalid-body"
        ) from None
    if vectors.ndim != 2 or vectors.shape[0] != expected or vectors.shape[1] == 0:
        raise ClientError(
            f"asked for {expected} embeddings, got an array of shape {vectors.shape}.", status="invalid-body"
        )
    if not np.all(np.isfinite(vectors)):
        raise ClientError("the server returned NaN or infinite values.", status="invalid-body")
    return Encoded(vectors, int(tokens) if isinstance(tokens, int) else None)


@dataclass(frozen=True)
class Outcome:
    """One request: ``status`` is the HTTP code, ``invalid-body``, or ``transport:<Error>`` when none came back."""

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


# -- the client ----------------------------------------------------------------------------
class OpenAIClient:
    """``POST /v1/embeddings`` and ``GET /v1/models`` of one OpenAI-compatible server.

    ``model``: the name sent in every body (None: ``resolve_model`` or ``served_model``
    finds it). ``encoding_format``: sent when not None; float and base64 answers are both
    parsed. ``transport``: an httpx transport (tests).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 0,
        encoding_format: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise InputError("retries must be at least 0.", param="retries")
        self.base_url = base_url(endpoint)
        self.url = self.base_url + "/embeddings"
        self.models_url = self.base_url + "/models"
        self.root = server_root(self.base_url)
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.encoding_format = encoding_format
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(headers=self.headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: its ``data`` list; ClientError when the server cannot say."""
        try:
            response = self.http.get(self.models_url)
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach {self.models_url} ({exc}); is the server up?",
                status="transport",
                url=self.models_url,
            ) from None
        if response.status_code != 200:
            raise ClientError(f"{self.models_url} answered {response.status_code}: {error_message(response.content)}",
                              status=response.status_code, url=self.models_url)  # fmt: skip
        try:
            data = response.json().get("data") or []
        except (ValueError, AttributeError):
            data = []
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    def served_model(self) -> dict[str, Any]:
        """The first model of ``GET /v1/models`` (``id``, ``owned_by``, ...); sets ``model``."""
        data = self.models()
        if not data or "id" not in data[0]:
            raise ClientError(
                f"{self.models_url} lists no model.", status="invalid-body", url=self.models_url
            )
        self.model = str(data[0]["id"])
        return data[0]

    def resolve_model(self, default: str = "default") -> str:
        """The model name to send: the one given, else the first served one, else ``default``."""
        if not self.model:
            try:
                self.served_model()
            except ClientError:
                self.model = default
        return self.model or default

    # -- other pages of the server -----------------------------------------------------------
    def get(self, path: str, *, timeout: float | None = None) -> httpx.Response | None:
        """``GET`` a page under the server root (``/info``, ``/metrics``); None when nothing answers."""
        try:
            return self.http.get(self.root + path, timeout=timeout if timeout is not None else self.timeout)
        except httpx.HTTPError:
            return None

    # -- embeddings --------------------------------------------------------------------------
    def body(self, texts: Sequence[str], **fields: Any) -> dict[str, Any]:
        """The request body: model, input, ``encoding_format`` when set, then ``fields`` (not None)."""
        body: dict[str, Any] = {"model": self.model or "default", "input": list(texts)}
        if self.encoding_format is not None:
            body["encoding_format"] = self.encoding_format
        body.update({k: v for k, v in fields.items() if v is not None})
        return body

    def post(self, body: dict[str, Any]) -> Encoded:
        """POST a body, retrying busy answers ``retries`` times; the checked vectors or ClientError."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.post(self.url, content=orjson.dumps(body))
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ClientError(
                        f"POST {self.url} failed: {exc}.", status="transport", url=self.url
                    ) from None
                time.sleep(min(2.0**attempt, 30.0))  # backoff: the server gives nothing to wait on
                continue
            if response.status_code in RETRY_STATUS and attempt < self.retries:
                retry_after = response.headers.get("retry-after", "")
                time.sleep(
                    float(retry_after)
                    if retry_after.replace(".", "", 1).isdigit()
                    else min(2.0**attempt, 30.0)
                )
                continue
            if response.status_code != 200:
                raise ClientError(f"POST {self.url} answered {response.status_code}: {error_message(response.content)}",
                                  status=response.status_code, url=self.url)  # fmt: skip
            return parse_embeddings(response.content, len(body["input"]))
        raise AssertionError("unreachable")

    def embed(self, texts: Sequence[str], **fields: Any) -> Encoded:
        return self.post(self.body(texts, **fields))

    # -- measured requests (the bench): never raise, never retry -----------------------------
    def _judge(self, status: int, content: bytes, n_inputs: int, began: float) -> Outcome:
        now = time.perf_counter()
        latency = now - began
        if status != 200:
            return Outcome(
                status, latency, False, n_inputs, error=error_message(content, 300), finished_at=now
            )
        try:
            encoded = parse_embeddings(content, n_inputs)
        except ClientError as exc:
            return Outcome("invalid-body", latency, False, n_inputs, error=exc.message, finished_at=now)
        n, dim = encoded.vectors.shape
        return Outcome(200, latency, True, n_inputs, n, dim, encoded.prompt_tokens, finished_at=now)

    @staticmethod
    def _transport_failure(exc: Exception, n_inputs: int, began: float) -> Outcome:
        now = time.perf_counter()
        return Outcome(
            f"transport:{type(exc).__name__}",
            now - began,
            False,
            n_inputs,
            error=str(exc)[:300],
            finished_at=now,
        )

    def attempt(self, texts: Sequence[str]) -> Outcome:
        content = orjson.dumps(self.body(texts))
        began = time.perf_counter()
        try:
            response = self.http.post(self.url, content=content)
        except httpx.HTTPError as exc:
            return self._transport_failure(exc, len(texts), began)
        return self._judge(response.status_code, response.content, len(texts), began)

    def async_http(self, concurrency: int | None = None) -> httpx.AsyncClient:
        """An async connection pool for ``attempt_async`` (``concurrency`` connections kept)."""
        limits = (
            httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            if concurrency
            else httpx.Limits()
        )
        return httpx.AsyncClient(headers=self.headers, limits=limits, timeout=self.timeout)

    async def attempt_async(self, http: httpx.AsyncClient, texts: Sequence[str]) -> Outcome:
        content = orjson.dumps(self.body(texts))
        began = time.perf_counter()
        try:
            response = await http.post(self.url, content=content, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            return self._transport_failure(exc, len(texts), began)
        return self._judge(response.status_code, response.content, len(texts), began)


class HttpEncoder:
    """An OpenAI-compatible server as a ``TextEncoder``.

    ``role`` goes out as ``input_type``, the options as body fields (qembed's server reads
    ``task``, ``instruction``, ``prompt``, ``dimensions``; other servers ignore what they do
    not know). ``batch_size`` is the client's: inputs go out in requests of that many.
    """

    def __init__(self, client: OpenAIClient, *, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise InputError("batch_size must be at least 1.", param="batch_size")
        self.client = client
        self.batch_size = batch_size
        self._dimension: int | None = None
        if not client.model:
            client.served_model()

    @property
    def model_id(self) -> str:
        return str(self.client.model)

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def identity(self) -> dict[str, Any]:
        return {"kind": "http", "base_url": self.client.base_url, "model": self.client.model}

    def encode(self, texts: Sequence[str], *, role: Role | None = None, **options: Any) -> Encoded:
        batch_size = int(options.pop("batch_size", None) or self.batch_size)
        if role is not None:
            options["input_type"] = role
        parts = [
            self.client.embed(texts[i : i + batch_size], **options) for i in range(0, len(texts), batch_size)
        ]
        if not parts:
            return Encoded(np.zeros((0, self._dimension or 0), dtype=np.float32), 0)
        dims = {p.vectors.shape[1] for p in parts}
        if len(dims) != 1:
            raise ClientError(
                f"the server returned vectors of different sizes {sorted(dims)}.", status="invalid-body"
            )
        self._dimension = dims.pop()
        counted = [p.prompt_tokens for p in parts]
        tokens = None if any(t is None for t in counted) else sum(t for t in counted if t is not None)
        return Encoded(np.concatenate([p.vectors for p in parts], axis=0), tokens)

    def close(self) -> None:
        self.client.close()
