"""Server fixtures: apps over the tiny Qwen3 fixture (real tokenizer, random weights) and a
real uvicorn server on 127.0.0.1 for the OpenAI SDK, concurrency and schemathesis tests.

Waiting is always on a condition with a deadline (``wait_for``), never a fixed sleep.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from qembed import Embedder, Settings
from qembed.server.app import create_app

DEADLINE = 60.0


def wait_for(condition: Callable[[], Any], *, timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_process(
    log_path: Path, *args: str, ready_timeout: float = 120.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``qembed serve ARGS --port P`` as a subprocess, ready (``/ready`` 200) when entered;
    killed if still running on exit. Yields the process and its base URL; output goes to ``log_path``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qembed.cli.main", "serve", *args, "--port", str(port)],
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool:
                assert proc.poll() is None, f"qembed serve exited early:\n{log_path.read_text()}"
                try:
                    return httpx.get(url + "/ready", timeout=5).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, timeout=ready_timeout, what=f"{url}/ready")
            yield proc, url
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value} via the official parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def settings_for(model_dir: Path, **overrides: Any) -> Settings:
    return Settings(model=str(model_dir), **overrides)


def ready_client(app: FastAPI, **kwargs: Any) -> TestClient:
    """An entered TestClient whose app finished its warm-up."""
    client = TestClient(app, **kwargs)
    client.__enter__()
    wait_for(lambda: client.get("/ready").status_code == 200, what="/ready")
    return client


class LiveServer:
    """uvicorn in a thread, on a socket bound before start (no free-port race)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()

        def is_ready() -> bool:
            try:
                return httpx.get(self.url + "/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(is_ready, what=f"{self.url}/ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return metric_samples(httpx.get(self.url + "/metrics", timeout=10).text)


@pytest.fixture(scope="session")
def tiny_client(tiny_model_dir: Path, tiny_embedder: Embedder) -> Iterator[TestClient]:
    """In-process app over the tiny model with default limits."""
    app = create_app(settings_for(tiny_model_dir), tiny_embedder)
    client = ready_client(app)
    yield client
    client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def live_server(tiny_model_dir: Path, tiny_embedder: Embedder) -> Iterator[LiveServer]:
    """A real HTTP server over the tiny model (no API key: any key, "EMPTY" too, is accepted)."""
    with LiveServer(create_app(settings_for(tiny_model_dir), tiny_embedder)) as server:
        yield server


@pytest.fixture(scope="session")
def short_embedder(tiny_model_dir: Path) -> Embedder:
    """The tiny model with a 64-token window, so that long inputs (chunking, long_text=error)
    are cheap to make."""
    return Embedder(str(tiny_model_dir), max_tokens=64)


@pytest.fixture
def make_client(tiny_model_dir: Path, tiny_embedder: Embedder) -> Iterator[Callable[..., TestClient]]:
    """Build apps with other settings (limits, keys); closed at the end of the test."""
    clients: list[TestClient] = []

    def make(embedder: Embedder | None = None, **overrides: Any) -> TestClient:
        app = create_app(settings_for(tiny_model_dir, **overrides), embedder or tiny_embedder)
        client = ready_client(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
