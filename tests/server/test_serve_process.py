"""`qembed serve` as a real process, as the README's Quick start runs it: no --model, no
network. The engine falls back to MiniLM; requests naming Qwen3 get 404; then SIGTERM
during load: every accepted request completes with 200 and the process exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import metric_samples, wait_for

CLIENTS = 4
INPUTS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "QEMBED_LOG_LEVEL": "info"}
    env.pop("QEMBED_MODEL", None)
    log = (tmp_path / "serve.log").open("w+")
    # --max-batch-size 1: one window per model batch, so the load below lasts long enough
    # to be interrupted on any machine (per-batch overhead, not raw speed, sets its length).
    proc = subprocess.Popen(
        [sys.executable, "-m", "qembed.cli.main", "serve", "--port", str(port), "--max-batch-size", "1", "--threads", "1", "--shutdown-timeout", "120"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"qembed serve exited early:\n{(tmp_path / 'serve.log').read_text()}"
        try:
            return httpx.get(url + "/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=240, what="qembed serve /ready")
        yield proc, url, tmp_path / "serve.log"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()


def test_quick_start_then_sigterm_during_load(served) -> None:
    proc, url, log_path = served

    # Quick start: the default model is not to be had offline -> MiniLM, said loudly.
    info = httpx.get(url + "/info").json()
    assert info["model"] == "sentence-transformers/all-MiniLM-L6-v2" and info["fallback_reason"]
    r = httpx.post(url + "/v1/embeddings", json={"input": "hello", "model": "Qwen/Qwen3-Embedding-0.6B"})
    assert r.status_code == 404 and "all-MiniLM-L6-v2" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/embeddings", json={"input": "hello"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384

    # Load: CLIENTS requests of INPUTS texts each, all accepted before SIGTERM.
    results: list[httpx.Response | BaseException] = [None] * CLIENTS  # type: ignore[list-item]

    def client(k: int) -> None:
        try:
            results[k] = httpx.post(url + "/v1/embeddings", json={"input": [f"client {k} text {i} " * 20 for i in range(INPUTS)]}, timeout=300)
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
            results[k] = exc

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()

    def all_accepted() -> tuple[float, float] | None:
        s = metric_samples(httpx.get(url + "/metrics").text)
        in_flight = s[("qembed_requests_in_flight", ())] - 1  # minus this scrape
        done = s.get(("qembed_requests_total", (("route", "/v1/embeddings"), ("status", "200"))), 0) - 1  # minus the quick-start request
        return (in_flight, done) if in_flight + done == CLIENTS else None

    in_flight, done = wait_for(all_accepted, timeout=120, what="all requests accepted")
    assert in_flight >= 1, "the load finished before SIGTERM; make it heavier"
    proc.send_signal(signal.SIGTERM)

    # New requests are refused from now on (503 from the drain gate, then connection refused).
    def refused() -> bool:
        try:
            return httpx.post(url + "/v1/embeddings", json={"input": "late"}, timeout=10).status_code == 503
        except httpx.TransportError:
            return True

    wait_for(refused, timeout=60, what="new requests refused after SIGTERM")

    for t in threads:
        t.join(300)
    for k, result in enumerate(results):
        assert isinstance(result, httpx.Response), f"client {k}: {result!r}"
        assert result.status_code == 200, result.text
        assert len(result.json()["data"]) == INPUTS
    assert proc.wait(timeout=120) == 0
    log = log_path.read_text()
    assert "FALLING BACK" in log and "settings: {" in log
    assert log.count("request id=") >= CLIENTS + 2 and f"inputs={INPUTS}" in log
