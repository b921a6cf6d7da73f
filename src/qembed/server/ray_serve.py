"""qembed as a Ray Serve application: N replicas, each one ``create_app`` with its own model.

Each replica is the FastAPI app ``qembed serve`` runs (``create_app``: every OpenAI and
native route, the middleware, auth, limits, metrics), built inside the replica by
``__serve_build_asgi_app__`` -- the late-bound form of ``@serve.ingress`` -- because the
app owns a model and its batching queue, which must be loaded where the replica runs,
not pickled from the driver. Ray's proxy routes HTTP requests to the replicas; each
replica batches the requests it gets through its own queue and model thread.

- Readiness: the replica's ASGI start-up (the app's lifespan) returns only once the
  warm-up batch ran, so Ray routes nothing to a replica whose ``/ready`` would be 503;
  ``check_health`` asks the app's own ``/health`` and ``/ready`` (in process, the same
  handlers) and fails when the model worker died or the model is not ready: Ray replaces
  the replica.
- Autoscaling: on queued tokens (``record_autoscaling_stats`` -> ``ray_autoscale.QueuedTokensPolicy``).
- Drain: on downscale or shutdown Ray stops routing to the replica and waits for its
  ongoing requests; then the replica's destructor runs the app's lifespan shutdown, which
  is qembed's drain (``EmbeddingService.stop(--shutdown-timeout)``).
  ``graceful_shutdown_timeout_s`` is ``--shutdown-timeout`` plus a margin, so Ray's force
  kill never lands inside qembed's drain.

Start it with ``qembed serve --ray [--replicas N | --min-replicas A --max-replicas B]``,
``serve run qembed.server.ray_serve:app`` (settings from ``QEMBED_*`` and ``QEMBED_RAY_*``)
or ``serve run qembed.server.ray_serve:build_app model=./m replicas=2`` (arguments win).

``ray`` is the optional ``ray`` extra: this module imports it only inside functions, so
``import qembed.server.ray_serve`` (and the pure configuration below) works without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qembed.errors import InputError
from qembed.server.ray_autoscale import DEFAULT_TARGET_QUEUED_TOKENS, QUEUED_TOKENS, QueuedTokensPolicy
from qembed.settings import Settings, settings_error

if TYPE_CHECKING:
    from fastapi import FastAPI

    from qembed.embedding.embedder import Embedder
    from qembed.serving.service import EmbeddingService

log = logging.getLogger(__name__)

REPLICA_HEADER = "x-qembed-replica"  # which replica answered (spread checks, debugging a replica)
DRAIN_MARGIN_S = 5.0  # Ray's force kill comes this long after --shutdown-timeout: the destructor's own time
READY_POLL_S = 0.05
POLICY_PATH = f"{QueuedTokensPolicy.__module__}:{QueuedTokensPolicy.__name__}"
INSTALL_HINT = "Ray Serve is not installed: pip install 'qembed-server[ray]' (ray[serve,data]==2.60.0)."


class RayServeOptions(BaseSettings):
    """How the Ray deployment is shaped (flags of ``qembed serve --ray``, env ``QEMBED_RAY_*``,
    ``serve run ...:build_app`` arguments). Not part of ``Settings``: a single
    ``qembed serve`` has no use for them."""

    model_config = SettingsConfigDict(env_prefix="QEMBED_RAY_", extra="ignore")

    name: str = Field("qembed", description="Ray Serve application (and deployment) name.")
    route_prefix: str = Field("/", description="URL prefix of the app on Ray's proxy.")
    replicas: int | None = Field(None, ge=1, description="Fixed replica count (no autoscaling).")
    min_replicas: int | None = Field(None, ge=0, description="Autoscaling: fewest replicas.")
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling: most replicas.")
    target_queued_tokens: int = Field(
        DEFAULT_TARGET_QUEUED_TOKENS,
        ge=1,
        description="Autoscaling: tokens waiting for the model per replica that the autoscaler aims at.",
    )
    upscale_delay_s: float = Field(
        10.0, ge=0, description="Autoscaling: backlog high this long before adding."
    )
    downscale_delay_s: float = Field(
        120.0, ge=0, description="Autoscaling: backlog low this long before removing."
    )
    look_back_period_s: float = Field(
        15.0,
        gt=0,
        description="Autoscaling: window the backlog is averaged over (> Ray's 10 s metrics interval).",
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per replica (also its torch threads).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per replica.")
    max_ongoing_requests: int = Field(
        128,
        ge=1,
        description="Requests Ray sends one replica at a time; qembed batches them, so far above Ray's default 5.",
    )
    health_check_period_s: float = Field(5.0, gt=0, description="How often Ray runs check_health.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="check_health slower than this fails.")

    @model_validator(mode="after")
    def _one_shape(self) -> RayServeOptions:
        autoscaled = self.min_replicas is not None or self.max_replicas is not None
        if self.replicas is not None and autoscaled:
            raise ValueError(
                "give --replicas (fixed) or --min-replicas/--max-replicas (autoscaled), not both"
            )
        if autoscaled:
            low = self.min_replicas if self.min_replicas is not None else 1
            high = self.max_replicas if self.max_replicas is not None else max(1, low)
            if high < low:
                raise ValueError(f"--max-replicas {high} is below --min-replicas {low}")
        return self

    @property
    def autoscaled(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None


def deployment_options(settings: Settings, options: RayServeOptions) -> dict[str, Any]:
    """Keyword arguments of ``serve.deployment`` for these settings (pure: tested without Ray)."""
    config: dict[str, Any] = {
        "name": options.name,
        "ray_actor_options": {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
        "max_ongoing_requests": options.max_ongoing_requests,
        "health_check_period_s": options.health_check_period_s,
        "health_check_timeout_s": options.health_check_timeout_s,
        # Ray waits for ongoing requests, then the destructor runs qembed's drain, which may
        # take up to --shutdown-timeout itself: Ray must not force-kill before both are done.
        "graceful_shutdown_timeout_s": settings.shutdown_timeout + DRAIN_MARGIN_S,
        "graceful_shutdown_wait_loop_s": 0.5,
    }
    if options.autoscaled:
        low = options.min_replicas if options.min_replicas is not None else 1
        high = options.max_replicas if options.max_replicas is not None else max(1, low)
        config["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "initial_replicas": max(low, 1),
            "upscale_delay_s": options.upscale_delay_s,
            "downscale_delay_s": options.downscale_delay_s,
            "look_back_period_s": options.look_back_period_s,
            "policy": {
                "policy_function": POLICY_PATH,
                "policy_kwargs": {"target_queued_tokens": options.target_queued_tokens},
            },
        }
    else:
        config["num_replicas"] = options.replicas or 1
    return config


def split_args(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``serve run ...:build_app key=value`` arguments -> (Settings changes, RayServeOptions
    changes); a name neither knows is an error naming the closest one (``Settings.overlay``)."""
    ray_fields = set(RayServeOptions.model_fields)
    settings_changes: dict[str, Any] = {}
    ray_changes: dict[str, Any] = {}
    for key, value in args.items():
        name = key.replace("-", "_")
        (ray_changes if name in ray_fields else settings_changes)[name] = value
    return settings_changes, ray_changes


def resolve(
    args: dict[str, Any] | None = None, *, settings: Settings | None = None
) -> tuple[Settings, RayServeOptions]:
    """Settings (env ``QEMBED_*``, then ``args``) and Ray options (env ``QEMBED_RAY_*``, then ``args``),
    validated in the driver: replicas get the finished Settings object, not the driver's env."""
    settings_changes, ray_changes = split_args(args or {})
    try:
        base = settings if settings is not None else Settings()
        options = RayServeOptions(**ray_changes)
    except ValidationError as exc:
        raise settings_error(exc) from exc
    return base.overlay(**settings_changes), options


# -- the replica --------------------------------------------------------------------------------
class ReplicaHeader:
    """ASGI middleware: every HTTP response names the replica that produced it."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.value = replica.encode("latin-1", "replace")

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (REPLICA_HEADER.encode(), self.value)],
                }
            await send(message)

        await self.app(scope, receive, send_named)


BODY_LOST_HEADER = b"x-qembed-body-lost"  # a 503 sent before any work: the proxy guard retries it
NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class BodyOrRetry:
    """ASGI middleware (outermost in a replica): a request whose body never arrives is answered
    503 ``request_body_lost`` after ``--request-read-timeout``, marked for a retry.

    Why: when a replica dies while Ray's router is handing it a request, the router re-sends
    the request to another replica, but the body was already taken from the proxy's receive
    queue by the dead one, so the new replica would wait for it forever (seen in the slow
    test: a request hung until its client gave up). Nothing has been computed at that point,
    so the answer is safe to retry: ``ReplicaLossGuard`` in the proxy does, once."""

    def __init__(self, app: Any, wait_s: float) -> None:
        self.app = app
        self.wait_s = wait_s

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http" or scope.get("method") in NO_BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            first = await asyncio.wait_for(receive(), self.wait_s)
        except TimeoutError:
            log.warning(
                "no request body within %.0f s (lost on a re-route); answering 503 for a retry", self.wait_s
            )
            code = "request_body_lost"
            headers, body = _error_body(
                503,
                "The request body did not reach the replica (it was re-routed after another replica died); "
                "retry the request.",
                code,
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [*headers, (BODY_LOST_HEADER, b"1")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        pending = [first]

        async def replay() -> Any:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


async def until_ready(service: EmbeddingService) -> None:
    """Wait for the warm-up batch; raise when it failed or the model thread is gone (the
    replica then fails to start and Ray starts another)."""
    while not service.ready:
        if service.warmup_error:
            raise RuntimeError(service.warmup_error)
        if not service.worker.alive:
            raise RuntimeError("the model worker stopped during the warm-up")
        await asyncio.sleep(READY_POLL_S)


def ready_before_start(app: FastAPI) -> None:
    """Make the app's start-up (what Ray awaits before routing to the replica) end only when
    ``/ready`` would answer 200: the lifespan of ``create_app`` starts the warm-up in the background."""
    inner = app.router.lifespan_context
    service: EmbeddingService = app.state.service

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as state:
            await until_ready(service)
            yield state

    app.router.lifespan_context = lifespan


async def probe(app: Any) -> None:
    """``/health`` then ``/ready`` of ``app``, in process; raise with the app's own message
    when either is not 200 (what a load balancer would see, without a socket)."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
        for path in ("/health", "/ready"):
            response = await client.get(path)
            if response.status_code != 200:
                try:
                    message = response.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = response.text
                raise RuntimeError(f"{path} answered {response.status_code}: {message}")


class QembedReplica:
    """One replica: loads the model in its constructor, then serves ``create_app``.

    Not a Ray Serve deployment by itself: ``deployment()`` wraps it with ``serve.ingress``
    and ``serve.deployment`` once Ray is imported (this class stays importable without Ray)."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        """``embedder``: one already loaded (tests; as ``create_app`` takes one), else loaded here."""
        from qembed.embedding.embedder import Embedder

        self.settings = settings
        self.replica_id = _replica_id()
        # before the app: a bad model fails the replica's start here, with the loader's message
        self.embedder = embedder if embedder is not None else Embedder(settings=settings)
        self.qembed_app: FastAPI | None = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        from qembed.server.app import create_app

        app = create_app(self.settings, self.embedder)
        ready_before_start(app)
        app.add_middleware(ReplicaHeader, replica=self.replica_id)
        app.add_middleware(
            BodyOrRetry, wait_s=self.settings.request_read_timeout
        )  # outside: no replica header
        app.state.replica_id = self.replica_id
        self.qembed_app = app
        return app

    async def check_health(self) -> None:
        """Ray's health check: the app's own /health (model thread alive) and /ready."""
        if self.qembed_app is None:
            raise RuntimeError("the app is not built yet")
        await probe(self.qembed_app)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """The backlog Ray's autoscaler averages per replica (``QueuedTokensPolicy``)."""
        if self.qembed_app is None:
            return {QUEUED_TOKENS: 0.0}
        queue = self.qembed_app.state.service.queue
        return {QUEUED_TOKENS: float(queue.queued_tokens), "queued_requests": float(queue.queued_requests)}


def _replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # noqa: BLE001 - outside a replica (tests): a stable stand-in
        return "local"


_DEPLOYMENT: Any = None


def deployment() -> Any:
    """The Ray Serve deployment class (built once; needs ``ray``)."""
    global _DEPLOYMENT
    if _DEPLOYMENT is None:
        try:
            from ray import serve
        except ImportError as exc:
            raise InputError(INSTALL_HINT) from exc
        _DEPLOYMENT = serve.deployment(serve.ingress()(QembedReplica))
    return _DEPLOYMENT


def application(settings: Settings, options: RayServeOptions) -> Any:
    """The Ray Serve ``Application`` for finished settings (``qembed serve --ray``, tests)."""
    return deployment().options(**deployment_options(settings, options)).bind(settings)


def build_app(args: dict[str, Any]) -> Any:
    """``serve run qembed.server.ray_serve:build_app key=value ...`` (Ray calls a builder with one
    dict of the command line's arguments).

    Arguments are Settings fields (``model=./m``, ``max_batch_tokens=4096``) or RayServeOptions
    fields (``replicas=2``, ``max_replicas=4``); the environment (``QEMBED_*``, ``QEMBED_RAY_*``)
    fills the rest."""
    return application(*resolve(args))


def __getattr__(name: str) -> Any:
    """``serve run qembed.server.ray_serve:app``: the Application from the environment, built
    on first access (importing this module must not need Ray or build anything)."""
    if name == "app":
        return build_app({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- Ray's proxy: a request whose replica died is retried once, else a clear 503 ---------------
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = f"{__name__}:proxy_middlewares"
RETRY_BODY_LIMIT = 64 * 1024 * 1024  # bodies up to this are kept for a retry (qembed's --payload-limit: 8 MB)
RETRIES = 1
RETRIED_HEADER = b"x-qembed-retried"  # on a response that needed a retry: how many


def _error_body(status: int, message: str, code: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    import orjson

    body = orjson.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    return headers, body


class ReplicaLossGuard:
    """ASGI middleware for Ray Serve's HTTP proxy (``proxy_middlewares``).

    Why: when a replica dies with requests in flight (a crash, an OOM kill, ``ray.kill``,
    a node lost), Ray's proxy answers those requests ``500 Internal Server Error`` in
    plain text, and when no replica can take a request it answers a plain-text 503. An
    OpenAI client can act on neither. A response that no qembed replica produced has no
    ``x-qembed-replica`` header; for those this guard

    - re-sends a request that died with its replica once (Ray's router has marked the
      replica dead by then, so the retry goes to a live one): every qembed route is safe to
      repeat (an embedding is a pure function of its input; the index is keyed by content hash);
    - re-sends, the same way, a request a replica answered 503 ``x-qembed-body-lost``
      (``BodyOrRetry``: Ray's router re-routed it after a replica died, without its body);
    - otherwise answers 503 with an OpenAI error body (``replica_unavailable``, or Ray's own
      message for a deployment with no replica) and ``Retry-After``.

    The request body is kept in memory for the retry (up to ``RETRY_BODY_LIMIT``; a larger
    one is streamed through, not retried).
    """

    def __init__(self, app: Any, retries: int = RETRIES) -> None:
        self.app = app
        self.retries = retries
        self.retried = 0  # requests re-sent after a replica loss (this proxy, since start)
        self.failed = 0  # requests answered 503 by this guard

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[MutableMapping[str, Any]] = []
        size, complete = 0, False
        while not complete and size <= RETRY_BODY_LIMIT:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break  # the client left before sending the body
            size += len(message.get("body", b""))
            complete = not message.get("more_body", False)
        if chunks and chunks[-1]["type"] != "http.request":
            return  # disconnected: nothing to answer
        attempts = 1 + (self.retries if complete else 0)
        for attempt in range(attempts):
            outcome = await self._attempt(dict(scope), chunks, receive, send, attempt)
            if outcome is None:
                return  # a replica answered (or the response was already under way)
            status, message = outcome
            if status == 500 and attempt + 1 < attempts:
                self.retried += 1
                log.warning("a replica died with this request in flight; retrying it (%s)", scope.get("path"))
                continue
            break
        self.failed += 1
        if status == 500:
            message = (
                "The replica serving this request stopped before answering"
                + (" (and so did the retry)" if attempts > 1 else "")
                + "; the request was not completed. Retry it."
            )
            code = "replica_unavailable"
        else:
            message = message or "No replica can take this request now; retry it."
            code = "no_replica_available"
        headers, body = _error_body(503, message, code)
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _attempt(
        self,
        scope: MutableMapping[str, Any],
        chunks: list[MutableMapping[str, Any]],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[..., Any],
        attempt: int = 0,
    ) -> tuple[int, str] | None:
        """Run one attempt; ``None`` when its response went to the client, else the status and
        text of a response Ray made itself (held back, not sent)."""
        pending = list(chunks)

        async def replay() -> Any:
            if pending:
                return pending.pop(0)
            return await receive()  # the rest of a long body, or the client's disconnect

        held: dict[str, Any] = {}

        async def intercept(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and not held:
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                made_by_ray = REPLICA_HEADER.encode() not in headers and message["status"] in (500, 503)
                if BODY_LOST_HEADER in headers:  # a replica never got the body: nothing was done
                    held["status"], held["body"] = 500, b""  # retried like a replica lost mid-request
                    return
                if made_by_ray and b"json" not in headers.get(b"content-type", b""):
                    held["status"], held["body"] = message["status"], b""
                    return
                held["sent"] = True
                if attempt:  # tell the client (and the tests) that a replica was lost on the way
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (RETRIED_HEADER, str(attempt).encode())],
                    }
            elif "status" in held and "sent" not in held:
                held["body"] += message.get("body", b"")
                return
            await send(message)

        try:
            await self.app(scope, replay, intercept)
        except Exception:
            if "sent" in held:
                raise  # the client has part of a response: nothing better to send
            log.warning("Ray's proxy raised before any replica answered", exc_info=True)
            return 500, ""
        if "sent" in held:
            return None
        if "status" in held:
            return int(held["status"]), bytes(held["body"]).decode("utf-8", "replace").strip()
        return 500, ""  # the proxy ended without a response (its way of saying "replica died")


def proxy_middlewares() -> list[Any]:
    """``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=qembed.server.ray_serve:proxy_middlewares``:
    Ray's proxy calls this at start and wraps its HTTP app in what it returns."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaLossGuard)]


# -- `qembed serve --ray` -----------------------------------------------------------------------
def run(settings: Settings, options: RayServeOptions, *, address: str | None = None) -> int:
    """Start (or join) Ray, serve the app on ``--host``/``--port`` through Ray's proxy until
    SIGTERM/SIGINT, then delete it gracefully (each replica drains). The exit code."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise InputError(INSTALL_HINT) from exc

    app = application(settings, options)
    # The proxy reads its callback from its environment, which a cluster started here inherits
    # (a cluster started elsewhere: set it where `ray start` runs, docs/SCALING.md).
    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        try:
            serve.run(app, name=options.name, route_prefix=options.route_prefix)
        except RuntimeError as exc:  # a replica failed to start (a wrong --model, the warm-up): Ray says why
            log.error("the Ray Serve app did not start: %s", exc)
            return 1
        log.info(
            "Ray Serve: app %r on http://%s:%d%s (%s)",
            options.name,
            settings.host,
            settings.port,
            options.route_prefix,
            "autoscaled on queued tokens" if options.autoscaled else f"{options.replicas or 1} replicas",
        )
        stop.wait()
        log.info(
            "stopping: Ray drains each replica (up to %.0f s)", settings.shutdown_timeout + DRAIN_MARGIN_S
        )
        serve.delete(options.name)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        serve.shutdown()
        ray.shutdown()
