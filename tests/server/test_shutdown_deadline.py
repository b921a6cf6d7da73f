"""SIGTERM with more backlog than --shutdown-timeout: every request still gets an OpenAI body
(200, or 503 `shutting_down` for the ones the deadline cut off; never a text/plain 500), the
model thread stops cleanly and the process exits 0, soon after the deadline."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import metric_samples, serve_process, wait_for

pytestmark = pytest.mark.e2e  # `qembed serve` in a subprocess

TIMEOUT = 2.0
CLIENTS = 6


def test_backlog_past_the_deadline_gets_503_bodies_and_exit_0(tmp_path: Path, tiny_model_dir: Path) -> None:
    log_path = tmp_path / "serve.log"
    # one 32-token window per model batch: the backlog below takes far longer than TIMEOUT
    args = ["--model", str(tiny_model_dir), "--max-batch-size", "1", "--max-tokens", "32", "--threads", "1"]
    with serve_process(log_path, *args, "--shutdown-timeout", str(TIMEOUT)) as (proc, url):
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
    output = log_path.read_text()
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
