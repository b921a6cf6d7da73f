"""SIGTERM with more backlog than --shutdown-timeout: every request still gets an OpenAI body
(200, or 503 `shutting_down` for the ones the deadline cut off; never a text/plain 500), the
model thread stops cleanly and the process exits 0, soon after the deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import metric_samples, wait_for
from tests.server.test_serve_process import free_port

pytestmark = pytest.mark.e2e  # `qembed serve` in a subprocess

TIMEOUT = 2.0
CLIENTS = 6


def test_backlog_past_the_deadline_gets_503_bodies_and_exit_0(tmp_path: Path, tiny_model_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w+")
    # one 32-token window per model batch: the backlog below takes far longer than TIMEOUT
    proc = subprocess.Popen(
        [sys.executable, "-m", "qembed.cli.main", "serve", "--model", str(tiny_model_dir), "--port", str(port),
         "--max-batch-size", "1", "--max-tokens", "32", "--threads", "1", "--shutdown-timeout", str(TIMEOUT)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(url + "/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=120, what="/ready")
        answers: list[httpx.Response | Exception] = []
        texts = [" ".join(f"w{i}x{j}" for j in range(150)) for i in range(24)]

        def client() -> None:
            try:
                answers.append(httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=120))
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                answers.append(exc)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()

        def backlog() -> bool:
            samples = metric_samples(httpx.get(url + "/metrics", timeout=10).text)
            return samples[("qembed_queue_requests", ())] >= CLIENTS - 1

        wait_for(backlog, timeout=60, what="a backlog")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        elapsed = time.monotonic() - sent
        for t in threads:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output[-3000:]
    assert "terminate called" not in output
    assert elapsed < TIMEOUT + 15, (elapsed, output[-2000:])
    assert len(answers) == CLIENTS
    statuses = []
    for answer in answers:
        assert isinstance(answer, httpx.Response), f"{answer!r}\n{output[-2000:]}"
        assert answer.headers["content-type"].startswith("application/json"), answer.text[:200]
        statuses.append(answer.status_code)
        if answer.status_code != 200:
            error = answer.json()["error"]
            assert answer.status_code == 503 and error["code"] == "shutting_down", error
            assert "--shutdown-timeout" in error["message"]
    assert 503 in statuses, statuses  # the backlog was longer than the deadline
