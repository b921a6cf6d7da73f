"""qembed on Ray Serve (server/ray_serve.py).

Default tests (no cluster, a few seconds): the deployment's configuration, the proxy guard
that turns a replica lost mid-request into a retry or an OpenAI 503, the replica header, the
start-up that waits for the warm-up and the health check built on /health and /ready.

The slow test starts a local Ray cluster on 127.0.0.1 (2 CPUs) with 2 replicas of the tiny
model: vectors equal in-process, requests spread across replicas, one replica killed under
load with every request answered 200 or a clear 503 (counted).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from qembed.errors import InputError
from qembed.server import ray_serve
from qembed.server.ray_autoscale import QueuedTokensPolicy
from qembed.server.ray_serve import (
    REPLICA_HEADER,
    RETRIED_HEADER,
    RayServeOptions,
    ReplicaLossGuard,
    deployment_options,
    resolve,
)
from qembed.settings import Settings
from tests.server.conftest import free_port, wait_for

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY, reason="ray (the `ray` extra: pip install 'qembed-server[ray]') is not installed"
)


# -- configuration -------------------------------------------------------------------------------
def test_fixed_replicas_and_the_drain_budget() -> None:
    settings = Settings(shutdown_timeout=12.0)
    config = deployment_options(settings, RayServeOptions(replicas=3))
    assert config["num_replicas"] == 3 and "autoscaling_config" not in config
    # Ray force-kills a stopping replica after graceful_shutdown_timeout_s: it must cover qembed's drain
    assert config["graceful_shutdown_timeout_s"] >= settings.shutdown_timeout + 1
    assert config["max_ongoing_requests"] > 5  # Ray's default 5 would starve qembed's batching


def test_autoscaling_uses_the_queued_tokens_policy() -> None:
    options = RayServeOptions(min_replicas=2, max_replicas=5, target_queued_tokens=4096)
    auto = deployment_options(Settings(), options)["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["initial_replicas"]) == (2, 5, 2)
    module, _, name = auto["policy"]["policy_function"].partition(":")
    assert getattr(importlib.import_module(module), name) is QueuedTokensPolicy
    assert auto["policy"]["policy_kwargs"] == {"target_queued_tokens": 4096}
    assert (
        deployment_options(Settings(), RayServeOptions(max_replicas=3))["autoscaling_config"]["min_replicas"]
        == 1
    )


def test_options_refuse_contradictions() -> None:
    with pytest.raises(ValueError, match="not both"):
        RayServeOptions(replicas=2, max_replicas=4)
    with pytest.raises(ValueError, match="below"):
        RayServeOptions(min_replicas=4, max_replicas=2)


def test_builder_arguments_split_between_settings_and_ray() -> None:
    settings, options = resolve({"model": "org/model", "replicas": "2", "shutdown-timeout": "7"})
    assert (settings.model, settings.shutdown_timeout, options.replicas) == ("org/model", 7.0, 2)
    with pytest.raises(InputError, match="max_batch_tokens"):
        resolve({"max_batch_tokenz": "10"})  # misspelt: the closest field is named
    with pytest.raises(InputError, match="replicas"):
        resolve({"replicas": "0"})


def test_module_imports_without_building() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ray_serve.nope  # noqa: B018 - the module __getattr__ only builds `app`


@needs_ray
def test_serve_run_import_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `serve run qembed.server.ray_serve:app` and `...:build_app replicas=3` resolve to,
    through Ray's own loader (no cluster: the Application is only built)."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application

    monkeypatch.setenv("QEMBED_RAY_MAX_REPLICAS", "4")
    monkeypatch.setenv("QEMBED_MODEL", "org/from-env")
    app = import_attr("qembed.server.ray_serve:app")
    assert isinstance(app, Application)
    built = call_user_app_builder_with_args_if_necessary(
        import_attr("qembed.server.ray_serve:build_app"),
        {"replicas": "3", "max_replicas": None, "model": "org/m"},
    )
    assert isinstance(built, Application)
    with pytest.raises(InputError, match="not both"):
        call_user_app_builder_with_args_if_necessary(
            import_attr("qembed.server.ray_serve:build_app"), {"replicas": "3"}
        )


@needs_ray
def test_ray_accepts_the_deployment_options() -> None:
    """Ray validates every option when the deployment is configured (no cluster needed)."""
    for options in (RayServeOptions(replicas=2), RayServeOptions(min_replicas=0, max_replicas=4)):
        deployment = ray_serve.deployment().options(**deployment_options(Settings(), options))
        assert deployment.name == "qembed"


# -- the proxy guard -----------------------------------------------------------------------------
class FakeProxy:
    """Ray's proxy as the guard sees it: answers from ``script`` in turn ("lost": the replica
    died, nothing sent; "ray503": Ray's own plain 503; "app500": qembed's JSON 500; "ok")."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        step = self.script.pop(0)
        if step == "lost":
            return
        if step == "bodylost":  # what BodyOrRetry answers when the body never came
            headers = [(b"content-type", b"application/json"), (ray_serve.BODY_LOST_HEADER, b"1")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"error": {"code": "request_body_lost"}}'})
            return
        if step == "ray503":
            await send(
                {"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]}
            )
            await send(
                {"type": "http.response.body", "body": b"Deployment 'qembed' has no available replicas."}
            )
            return
        status, headers = (500, [(b"content-type", b"application/json")]) if step == "app500" else (200, [])
        headers.append((REPLICA_HEADER.encode(), b"r1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"step": "%s"}' % step.encode()})


def call(guard: Any, body: bytes = b'{"input": "x"}') -> tuple[int, dict[bytes, bytes], bytes]:
    chunks = [
        {"type": "http.request", "body": body[:3], "more_body": True},
        {"type": "http.request", "body": body[3:]},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard({"type": "http", "method": "POST", "path": "/v1/embeddings"}, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_guard_retries_a_request_whose_replica_died() -> None:
    proxy = FakeProxy("lost", "ok")
    guard = ReplicaLossGuard(proxy)
    status, headers, body = call(guard)
    assert (status, body) == (200, b'{"step": "ok"}')
    assert headers[RETRIED_HEADER] == b"1"
    assert proxy.bodies == [b'{"input": "x"}'] * 2  # the same body, replayed
    assert (guard.retried, guard.failed) == (1, 0)


def test_guard_retries_a_request_a_replica_got_without_its_body() -> None:
    guard = ReplicaLossGuard(FakeProxy("bodylost", "ok"))
    status, headers, body = call(guard)
    assert (status, body, headers[RETRIED_HEADER]) == (200, b'{"step": "ok"}', b"1")


def test_replica_answers_503_for_a_retry_when_the_body_never_comes() -> None:
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    def run(receive: Any) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        middleware = ray_serve.BodyOrRetry(app, wait_s=0.2)
        asyncio.run(middleware({"type": "http", "method": "POST", "path": "/v1/embeddings"}, receive, send))
        return sent

    async def never() -> dict[str, Any]:
        await asyncio.Event().wait()  # the body was taken by a replica that died
        return {}

    sent = run(never)
    assert sent[0]["status"] == 503 and dict(sent[0]["headers"])[ray_serve.BODY_LOST_HEADER] == b"1"
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "request_body_lost" and seen == []

    async def body() -> dict[str, Any]:
        return {"type": "http.request", "body": b"payload"}

    assert run(body)[0]["status"] == 200 and seen == [b"payload"]


def test_guard_answers_503_in_openai_shape_when_the_retry_dies_too() -> None:
    guard = ReplicaLossGuard(FakeProxy("lost", "lost"))
    status, headers, body = call(guard)
    assert status == 503 and headers[b"retry-after"] == b"1"
    error = orjson.loads(body)["error"]
    assert error["code"] == "replica_unavailable" and error["type"] == "server_error"
    assert "retry" in error["message"].lower()
    assert guard.failed == 1


def test_guard_rewrites_rays_own_503_and_leaves_replica_answers_alone() -> None:
    status, _, body = call(ReplicaLossGuard(FakeProxy("ray503")))
    error = orjson.loads(body)["error"]
    assert (
        status == 503
        and error["code"] == "no_replica_available"
        and "no available replicas" in error["message"]
    )
    proxy = FakeProxy("app500")  # a qembed error response is the answer: not retried, not rewritten
    status, headers, body = call(ReplicaLossGuard(proxy))
    assert (status, body, len(proxy.bodies)) == (500, b'{"step": "app500"}', 1)
    assert RETRIED_HEADER not in headers


# -- the replica's app ---------------------------------------------------------------------------
def test_replica_app_starts_ready_names_itself_and_fails_health_when_the_worker_dies(
    tiny_model_dir: Path, tiny_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app a replica serves: start-up returns only after the warm-up (Ray routes nothing to a
    warming replica), every response names the replica, check_health is /health + /ready."""
    import httpx

    monkeypatch.setattr(ray_serve, "_replica_id", lambda: "replica-1")  # what Ray's replica context gives
    replica = ray_serve.QembedReplica(Settings(model=str(tiny_model_dir), device="cpu"), tiny_embedder)
    app = replica.__serve_build_asgi_app__()
    service = app.state.service

    async def scenario() -> tuple[int, str | None, bool, str]:
        async with app.router.lifespan_context(app):
            assert service.ready  # start-up waited for the warm-up batch
            await replica.check_health()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
                response = await client.post("/v1/embeddings", json={"input": ["hello"]})
            stats = replica.record_autoscaling_stats()
            service.worker.stop(10)  # the model thread ends: nothing would answer again
            try:
                await replica.check_health()
                failure = ""
            except RuntimeError as exc:
                failure = str(exc)
            return (
                response.status_code,
                response.headers.get(REPLICA_HEADER),
                stats["queued_tokens"] == 0,
                failure,
            )

    status, name, idle, failure = asyncio.run(scenario())
    assert (status, name, idle) == (200, "replica-1", True)
    assert failure.startswith("/health answered 503") and "worker" in failure


def test_start_up_fails_when_the_warm_up_fails() -> None:
    class Service:
        ready, warmup_error = False, "warm-up failed: out of memory"
        worker = type("W", (), {"alive": True})()

    with pytest.raises(RuntimeError, match="out of memory"):
        asyncio.run(ray_serve.until_ready(Service()))  # type: ignore[arg-type]


# -- a local cluster -----------------------------------------------------------------------------
@pytest.fixture
def ray_cluster() -> Iterator[Any]:
    """A fresh local Ray (2 CPUs, no dashboard) on 127.0.0.1, its proxy guarded; always shut down."""
    if not HAS_RAY:
        pytest.skip("ray (the `ray` extra) is not installed")
    import ray
    from ray import serve

    env = {
        ray_serve.PROXY_CALLBACK_ENV: ray_serve.PROXY_CALLBACK,  # the proxy inherits it
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",  # the backlog reaches the controller each second
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def running_replicas(name: str = "qembed") -> dict[str, int]:
    from ray import serve

    return dict(serve.status().applications[name].deployments[name].replica_states)


@pytest.mark.slow
@pytest.mark.e2e
def test_two_replicas_on_a_local_cluster(ray_cluster: Any, tiny_model_dir: Path, tiny_embedder: Any) -> None:
    import httpx
    from ray import serve

    started = time.monotonic()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # request_read_timeout: how long a replica waits for a body Ray's re-route lost before a 503 to retry
    settings = Settings(
        model=str(tiny_model_dir), device="cpu", shutdown_timeout=10.0, request_read_timeout=5.0
    )
    serve.run(
        ray_serve.application(settings, RayServeOptions(replicas=2, num_cpus=1)),
        name="qembed",
        route_prefix="/",
    )
    up = time.monotonic() - started
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=120)

    # vectors equal the in-process ones, through the same OpenAI route
    texts = ["Ray Serve replicas", "一个嵌入服务", "the quick brown fox " * 40]
    response = client.post("/v1/embeddings", json={"input": texts})
    assert response.status_code == 200, response.text
    served = np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float64)
    local = np.asarray(tiny_embedder.encode(texts), dtype=np.float64)
    cosines = (served * local).sum(1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(local, axis=1))
    assert cosines.min() >= 0.99999, cosines
    assert client.get("/ready").status_code == 200 and client.get("/health").status_code == 200

    # load from 6 clients; the kill comes once both replicas have answered a few requests
    answers: Counter[tuple[int, str]] = Counter()
    retried = 0
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        nonlocal retried
        with httpx.Client(base_url=url, timeout=120) as c:
            i = 0
            while not stop.is_set():
                try:
                    r = c.post("/v1/embeddings", json={"input": [f"client {worker} request {i} " * 20] * 8})
                except httpx.HTTPError as exc:  # a dropped connection: counted, and fails the test below
                    with lock:
                        answers[(-1, type(exc).__name__)] += 1
                    continue
                with lock:
                    answers[(r.status_code, r.headers.get(REPLICA_HEADER, "-"))] += 1
                    retried += int(r.headers.get(RETRIED_HEADER.decode(), "0") != "0")
                    if r.status_code != 200 or len(r.json()["data"]) != 8:
                        failures.append(r.text)
                i += 1

    threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()

    def per_replica() -> Counter[str]:
        with lock:
            return Counter({rid: n for (status, rid), n in answers.items() if status == 200})

    wait_for(
        lambda: len(per_replica()) == 2 and min(per_replica().values()) >= 2,
        timeout=180,
        what="both replicas",
    )
    spread_before_kill = per_replica()
    # the victim: a replica with requests in flight right now (Ray's count of ongoing requests),
    # so that the kill is certain to hit accepted requests
    actors = {
        a["name"].rsplit("#", 1)[-1]: ray_cluster.get_actor(a["name"], namespace=a["namespace"])
        for a in ray_cluster.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::")
    }
    assert set(actors) == set(spread_before_kill), (actors, spread_before_kill)

    def busy_replica() -> str | None:
        for rid, actor in actors.items():
            if ray_cluster.get(actor.get_num_ongoing_requests.remote(), timeout=10) >= 2:
                return rid
        return None

    victim_id = wait_for(busy_replica, timeout=120, what="a replica with 2 requests in flight")
    with lock:
        sent_before_kill = sum(answers.values())
    ray_cluster.kill(actors[victim_id], no_restart=True)
    killed_at = time.monotonic()
    # keep the load on until 30 more requests were answered after the kill
    wait_for(
        lambda: sum(answers.values()) >= sent_before_kill + 30, timeout=180, what="answers after the kill"
    )
    stop.set()
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads)

    # Ray replaces the killed replica (check_health passes on the new one): 2 RUNNING again
    def healed() -> bool:
        states = serve.status().applications["qembed"].deployments["qembed"].replica_states
        return states.get("RUNNING", 0) == 2 and sum(states.values()) == 2

    wait_for(healed, timeout=240, what="the replaced replica")
    healed_after = time.monotonic() - killed_at

    total = sum(answers.values())
    ok = sum(n for (status, _), n in answers.items() if status == 200)
    unavailable = sum(n for (status, _), n in answers.items() if status == 503)
    print(
        f"\nray serve: up in {up:.1f} s; {total} requests: {ok} x 200, {unavailable} x 503 "
        f"({retried} answered after a retry); per replica before the kill {dict(spread_before_kill)}; "
        f"all 200s by replica {dict(per_replica())}; others {dict((k, n) for k, n in answers.items() if k[0] != 200)}; "
        f"killed {victim_id}, 2 replicas RUNNING again after "
        f"{healed_after:.1f} s; test {time.monotonic() - started:.1f} s"
    )
    assert ok + unavailable == total, failures  # nothing else: no 500, no dropped connection
    # every failure is OpenAI's error shape with a code that says what happened
    codes = Counter(orjson.loads(f)["error"]["code"] for f in failures)
    assert set(codes) <= {"replica_unavailable", "no_replica_available"}, failures
    # the kill hit requests in flight on the victim (6 clients, 2 replicas): they were retried or 503
    assert retried + unavailable >= 1
    assert min(spread_before_kill.values()) >= 2  # both replicas took a share


# -- `qembed serve --ray` ------------------------------------------------------------------------
def test_serve_ray_flags_reach_the_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import qembed.cli.serve as serve

    seen: list[tuple[Settings, RayServeOptions, str | None]] = []
    monkeypatch.setattr(ray_serve, "run", lambda s, o, address=None: seen.append((s, o, address)) or 0)
    monkeypatch.setattr(serve, "run_server", lambda settings: pytest.fail("--ray must not start uvicorn"))
    port = str(free_port())
    args = ["--model", "org/m", "--port", port, "--ray", "--min-replicas", "1", "--max-replicas", "3"]
    result = CliRunner().invoke(
        serve.serve_cmd, [*args, "--target-queued-tokens", "2048", "--ray-address", "auto"]
    )
    assert result.exit_code == 0, result.output
    settings, options, address = seen[0]
    assert (settings.model, settings.port, address) == ("org/m", int(port), "auto")
    assert (options.min_replicas, options.max_replicas, options.target_queued_tokens) == (1, 3, 2048)

    result = CliRunner().invoke(serve.serve_cmd, ["--model", "org/m", "--port", port, "--replicas", "2"])
    assert result.exit_code == 2 and "add --ray" in result.output
    result = CliRunner().invoke(
        serve.serve_cmd, [*args[:5], "--ray", "--replicas", "2", "--max-replicas", "3"]
    )
    assert result.exit_code == 2 and "not both" in result.output
    assert len(seen) == 1


@pytest.mark.slow
@pytest.mark.e2e
def test_autoscaling_on_queued_tokens_and_drain_on_downscale(ray_cluster: Any, tiny_model_dir: Path) -> None:
    """1 -> 2 replicas when tokens queue up (not on request count), back to 1 when the backlog is
    gone, and every request sent while the second replica drains away is answered 200."""
    import httpx
    from ray import serve

    started = time.monotonic()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    options = RayServeOptions(
        min_replicas=1,
        max_replicas=2,
        target_queued_tokens=256,
        upscale_delay_s=0,
        downscale_delay_s=3,
        look_back_period_s=3,
        num_cpus=1,
    )
    settings = Settings(model=str(tiny_model_dir), device="cpu", shutdown_timeout=10.0)
    serve.run(ray_serve.application(settings, options), name="qembed", route_prefix="/")
    assert running_replicas() == {"RUNNING": 1}
    url = f"http://127.0.0.1:{port}"

    # heavy load: 6 clients x 8 inputs of ~200 tokens keep thousands of tokens queued
    statuses: Counter[int] = Counter()
    heavy, light = threading.Event(), threading.Event()
    lock = threading.Lock()

    def client(stop: threading.Event, inputs: int, words: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while not stop.is_set():
                try:
                    code = c.post(
                        "/v1/embeddings", json={"input": ["autoscale me " * words] * inputs}
                    ).status_code
                except httpx.HTTPError:
                    code = -1
                with lock:
                    statuses[code] += 1

    threads = [threading.Thread(target=client, args=(heavy, 8, 70), daemon=True) for _ in range(6)]
    load_from = time.monotonic()
    for t in threads:
        t.start()
    wait_for(lambda: running_replicas().get("RUNNING", 0) == 2, timeout=240, what="a second replica")
    scaled_up = time.monotonic() - load_from
    heavy.set()
    for t in threads:
        t.join(150)

    # a light client runs through the downscale: the leaving replica drains, nothing is lost
    with lock:
        before = sum(statuses.values())
    trickle = threading.Thread(target=client, args=(light, 1, 3), daemon=True)
    trickle.start()
    down_from = time.monotonic()
    wait_for(lambda: running_replicas() == {"RUNNING": 1}, timeout=240, what="the downscale to 1 replica")
    scaled_down = time.monotonic() - down_from
    wait_for(lambda: sum(statuses.values()) >= before + 5, timeout=60, what="requests after the downscale")
    light.set()
    trickle.join(60)
    with lock:
        during_downscale = sum(statuses.values()) - before
    print(
        f"\nray autoscaling: 1 -> 2 replicas (RUNNING) {scaled_up:.1f} s after the heavy load began; 2 -> 1 in "
        f"{scaled_down:.1f} s once the backlog was gone; {during_downscale} light requests across the "
        f"downscale; all answers {dict(statuses)}; test {time.monotonic() - started:.1f} s"
    )
    assert set(statuses) == {200}, statuses  # nothing refused or dropped, up or down
