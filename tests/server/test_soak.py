"""Soak (``-m slow``): 10 clients for 10 minutes against `qembed serve` on the tiny model, a
mix of short requests and 100k-token documents. Zero errors, server RSS growth under 5%,
and the short requests' latency percentiles printed (they stay short: fair batching).

QEMBED_SOAK_SECONDS shortens it for a try-out; the acceptance run uses the default 600."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server.conftest import metric_samples, serve_process

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SECONDS = float(os.environ.get("QEMBED_SOAK_SECONDS", "600"))
SMALL_CLIENTS, BIG_CLIENTS = 8, 2
BIG_WORDS = 14_500  # about 100k tokens with the Qwen3 tokenizer (a "w1234x5" word is ~7 tokens)


def _rss(url: str) -> float:
    return metric_samples(httpx.get(url + "/metrics", timeout=30).text)[("process_resident_memory_bytes", ())]


@pytest.mark.timeout(SECONDS + 1200)
def test_soak_mixed_load(tmp_path: Path, tiny_model_dir: Path) -> None:
    small_latency: list[float] = []
    big_latency: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    log_path = tmp_path / "serve.log"
    with serve_process(log_path, "--model", str(tiny_model_dir), "--log-level", "warning") as (proc, url):
        rng = random.Random(0)
        big_text = " ".join(f"w{rng.randrange(10_000)}x{i % 7}" for i in range(BIG_WORDS))
        big_tokens = len(
            httpx.post(url + "/tokenize", json={"input": big_text}, timeout=120).json()["data"][0]["tokens"]
        )
        stop = time.monotonic() + SECONDS
        warm = time.monotonic() + min(60.0, SECONDS / 5)  # RSS baseline after allocators settle
        baseline: list[float] = []

        def client(big: bool, seed: int) -> None:
            r = random.Random(seed)
            with httpx.Client(timeout=600) as http:
                while time.monotonic() < stop:
                    body = (
                        {"input": big_text}
                        if big
                        else {"input": [f"short query {r.random():.6f}" for _ in range(r.randint(1, 4))]}
                    )
                    start = time.perf_counter()
                    try:
                        answer = http.post(url + "/v1/embeddings", json=body)
                        ok = answer.status_code == 200
                        why = f"{answer.status_code} {answer.text[:200]}"
                    except httpx.HTTPError as exc:
                        ok, why = False, repr(exc)
                    took = time.perf_counter() - start
                    with lock:
                        (big_latency if big else small_latency).append(took) if ok else errors.append(why)
                    if not baseline and time.monotonic() > warm:
                        with lock:
                            if not baseline:
                                baseline.append(_rss(url))

        threads = [
            threading.Thread(target=client, args=(i < BIG_CLIENTS, i))
            for i in range(SMALL_CLIENTS + BIG_CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 900)
        final = _rss(url)
        proc.terminate()
        proc.wait(60)
    small = np.array(small_latency) * 1000
    report = {
        "seconds": SECONDS, "big_request_tokens": big_tokens, "small_requests": len(small_latency), "big_requests": len(big_latency),
        "errors": len(errors), "small_p50_ms": float(np.percentile(small, 50)), "small_p99_ms": float(np.percentile(small, 99)),
        "big_p50_s": float(np.percentile(big_latency, 50)) if big_latency else None,
        "rss_baseline_mib": baseline[0] / 2**20 if baseline else None, "rss_final_mib": final / 2**20,
    }  # fmt: skip
    print("soak:", json.dumps(report))
    if os.environ.get("QEMBED_SOAK_REPORT"):
        Path(os.environ["QEMBED_SOAK_REPORT"]).write_text(json.dumps(report, indent=2))
    assert errors == [], errors[:5]
    assert big_latency and len(small_latency) > 10 * len(big_latency)
    assert baseline and final <= baseline[0] * 1.05, report
