"""Closed-loop load against any OpenAI-compatible embeddings endpoint, and soak tests.

Closed loop: each of N clients sends a request, waits for the answer, and sends the next,
so the offered load adapts to the server (the way a pool of application workers behaves)
and latency is never inflated by a queue on our side. Each level runs for a fixed time,
bounded in requests too, and reports p50/p90/p99 latency of successful requests,
requests/s, tokens/s and errors by status (a 429 is back-pressure, a 503 is not ready, a
transport error is a dead server; lumping them together hides which one happened).

Soak mode keeps one level running for a long time and samples the server's resident
memory every few seconds (when the server is local: by pid, or found by its port), then
reports growth after a warm-up period: the number a leak shows up in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

from qembed.bench.procs import pid_listening_on, rss_bytes
from qembed.bench.workloads import Workload
from qembed.client.openai import OpenAIClient, Outcome

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass
class LoadOptions:
    endpoint: str
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 10, 32])
    duration: float = 30.0
    max_requests: int | None = None  # per level
    inputs_per_request: int = 1
    timeout: float = 60.0
    warmup_requests: int = 4
    model: str | None = None
    api_key: str | None = None
    encoding_format: str = "float"
    soak: bool = False
    soak_warmup: float = 60.0
    rss_interval: float = 5.0
    server_pid: int | None = None


@dataclass
class LevelResult:
    concurrency: int
    wall_seconds: float
    requests: int
    successes: int
    errors: dict[str, int]
    error_rate: float
    latency_ms: dict[str, float | None]
    requests_per_s: float
    successes_per_s: float
    inputs_per_s: float
    tokens_sent: int
    tokens_counted: int | None
    tokens_per_s: float
    error_examples: dict[str, str]
    windows: list[dict[str, Any]] = field(default_factory=list)  # soak: per sampling interval


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    arr = np.asarray(values) * 1000.0
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(arr.mean()), 3),
        "max": round(float(arr.max()), 3),
    }


class RequestSource:
    """Cycles through a pool of texts, ``k`` per request, with each request's token count."""

    def __init__(self, workload: Workload, inputs_per_request: int) -> None:
        if inputs_per_request < 1:
            raise ValueError("inputs_per_request must be >= 1")
        self.texts = workload.texts
        self.tokens = workload.token_counts
        self.k = inputs_per_request

    def request(self, i: int) -> tuple[list[str], int]:
        n = len(self.texts)
        idx = [(i * self.k + j) % n for j in range(self.k)]
        return [self.texts[j] for j in idx], sum(self.tokens[j] for j in idx)


def local_pid(endpoint: str) -> int | None:
    """The pid serving ``endpoint`` when it is on this machine (None for remote hosts)."""
    parsed = urlparse(endpoint)
    if parsed.hostname not in LOCAL_HOSTS:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return pid_listening_on(port)


def summarize(concurrency: int, records: list[tuple[Outcome, int]], wall: float) -> LevelResult:
    ok = [(o, t) for o, t in records if o.ok]
    errors: dict[str, int] = {}
    examples: dict[str, str] = {}
    for outcome, _ in records:
        if not outcome.ok:
            key = outcome.status_key
            errors[key] = errors.get(key, 0) + 1
            examples.setdefault(key, (outcome.error or "")[:300])
    counted = [o.prompt_tokens for o, _ in ok]
    wall = max(wall, 1e-9)
    sent = sum(t for _, t in ok)
    return LevelResult(
        concurrency=concurrency,
        wall_seconds=round(wall, 3),
        requests=len(records),
        successes=len(ok),
        errors=errors,
        error_rate=round((len(records) - len(ok)) / len(records), 6) if records else 0.0,
        latency_ms=percentiles([o.latency_s for o, _ in ok]),
        requests_per_s=round(len(records) / wall, 3),
        successes_per_s=round(len(ok) / wall, 3),
        inputs_per_s=round(sum(o.n_inputs for o, _ in ok) / wall, 3),
        tokens_sent=sent,
        tokens_counted=None
        if not ok or any(c is None for c in counted)
        else sum(c for c in counted if c is not None),
        tokens_per_s=round(sent / wall, 3),
        error_examples=examples,
    )


async def run_level(
    client: OpenAIClient,
    source: RequestSource,
    concurrency: int,
    *,
    duration: float,
    max_requests: int | None,
    start_index: int = 0,
    on_record: Callable[[Outcome, int], None] | None = None,
) -> tuple[list[tuple[Outcome, int]], float]:
    """``concurrency`` closed-loop clients for ``duration`` seconds (or ``max_requests``).

    Returns every request's outcome with the tokens it carried, and the wall time from the
    first send to the last answer."""
    records: list[tuple[Outcome, int]] = []
    issued = 0
    began = time.perf_counter()
    deadline = began + duration

    async def one_client(http: httpx.AsyncClient) -> None:
        nonlocal issued
        while time.perf_counter() < deadline and (max_requests is None or issued < max_requests):
            index = start_index + issued
            issued += 1
            texts, tokens = source.request(index)
            outcome = await client.attempt_async(http, texts)
            records.append((outcome, tokens))
            if on_record is not None:
                on_record(outcome, tokens)

    async with client.async_http(concurrency) as http:
        await asyncio.gather(*(one_client(http) for _ in range(concurrency)))
    last = max((o.finished_at for o, _ in records), default=time.perf_counter())
    return records, last - began


async def _warmup(client: OpenAIClient, source: RequestSource, n: int) -> dict[str, int]:
    statuses: dict[str, int] = {}
    async with client.async_http() as http:
        for i in range(n):
            outcome = await client.attempt_async(http, source.request(i)[0])
            statuses[outcome.status_key] = statuses.get(outcome.status_key, 0) + 1
    return statuses


class RssSampler:
    """Samples a local server's RSS every ``interval`` seconds while a soak runs."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)

    async def run(self, began: float, stop: asyncio.Event) -> None:
        while True:
            rss = rss_bytes(self.pid)
            if rss is not None:
                self.samples.append((round(time.perf_counter() - began, 3), round(rss / 2**20, 2)))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
                return
            except TimeoutError:
                continue


def rss_growth(samples: list[tuple[float, float]], warmup: float) -> dict[str, Any]:
    """Growth of RSS from the first sample after ``warmup`` seconds to the last sample."""
    after = [(t, mb) for t, mb in samples if t >= warmup]
    if len(after) < 2:
        return {"rss_at_warmup_mb": None, "rss_end_mb": None, "rss_peak_after_warmup_mb": None, "growth_pct": None,
                "note": f"fewer than two RSS samples after the {warmup:.0f} s warm-up; run longer or sample more often"}  # fmt: skip
    start, end = after[0][1], after[-1][1]
    peak = max(mb for _, mb in after)
    slope = (
        float(np.polyfit([t for t, _ in after], [mb for _, mb in after], 1)[0]) if len(after) >= 3 else None
    )
    return {
        "rss_at_warmup_mb": start,
        "rss_end_mb": end,
        "rss_peak_after_warmup_mb": peak,
        "growth_pct": round(100.0 * (end - start) / start, 3),
        "peak_growth_pct": round(100.0 * (peak - start) / start, 3),
        "slope_mb_per_hour": round(slope * 3600.0, 2) if slope is not None else None,
    }


async def _soak(
    client: OpenAIClient, source: RequestSource, options: LoadOptions, pid: int | None
) -> tuple[LevelResult, dict[str, Any]]:
    concurrency = options.concurrency[0]
    began = time.perf_counter()
    stop = asyncio.Event()
    sampler = RssSampler(pid, options.rss_interval) if pid else None
    window: list[tuple[Outcome, int]] = []
    windows: list[dict[str, Any]] = []

    async def window_loop() -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=options.rss_interval)
                done = True
            except TimeoutError:
                done = False
            batch = list(window)
            window.clear()
            ok = [o.latency_s for o, _ in batch if o.ok]
            windows.append(
                {
                    "t": round(time.perf_counter() - began, 3),
                    "requests": len(batch),
                    "errors": len(batch) - len(ok),
                    "p50_ms": percentiles(ok)["p50"],
                }
            )
            if done:
                return

    tasks = [asyncio.create_task(window_loop())]
    if sampler:
        tasks.append(asyncio.create_task(sampler.run(began, stop)))
    records, wall = await run_level(
        client,
        source,
        concurrency,
        duration=options.duration,
        max_requests=options.max_requests,
        on_record=lambda o, t: window.append((o, t)),
    )
    stop.set()
    await asyncio.gather(*tasks)
    level = summarize(concurrency, records, wall)
    level.windows = windows
    memory: dict[str, Any] = {"pid": pid, "interval_s": options.rss_interval, "warmup_s": options.soak_warmup}
    if sampler:
        memory["samples"] = sampler.samples
        memory.update(rss_growth(sampler.samples, options.soak_warmup))
    else:
        memory["note"] = (
            "the server is not local (or its pid is unknown): RSS was not sampled; pass --server-pid"
        )
    return level, memory


def run_load(
    options: LoadOptions, workload: Workload, *, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """All levels (or the soak) against ``options.endpoint``; a JSON-able result."""
    import datetime as dt

    from qembed.bench.machine import machine_info, versions

    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    result = _run_load(options, workload, progress)
    finished = dt.datetime.now(dt.UTC)
    result.update(kind="load", started=started.isoformat(timespec="seconds"), finished=finished.isoformat(timespec="seconds"),
                  machine=machine, versions=versions())  # fmt: skip
    result["checks"] = load_checks(result)
    return result


def _run_load(options: LoadOptions, workload: Workload, progress: Callable[[str], None]) -> dict[str, Any]:
    encoding_format = (
        None if options.encoding_format == "float" else options.encoding_format
    )  # float: the default, not sent
    client = OpenAIClient(
        options.endpoint,
        model=options.model,
        api_key=options.api_key,
        timeout=options.timeout,
        encoding_format=encoding_format,
    )
    model = client.resolve_model()
    source = RequestSource(workload, options.inputs_per_request)
    pid = options.server_pid or local_pid(options.endpoint)
    progress(f"warm-up: {options.warmup_requests} requests to {client.url} (model {model!r})")
    warmup = asyncio.run(_warmup(client, source, options.warmup_requests)) if options.warmup_requests else {}
    result: dict[str, Any] = {
        "endpoint": client.url,
        "model": model,
        "server_pid": pid,
        "options": {k: v for k, v in asdict(options).items() if k != "api_key"},
        "workload": {
            "name": workload.name,
            "tokens_per_text": workload.spec.tokens,
            "pool": len(workload.texts),
            "languages": workload.language_mix(),
            "inputs_per_request": options.inputs_per_request,
        },  # fmt: skip
        "warmup_statuses": warmup,
        "levels": [],
        "soak": None,
    }
    if options.soak:
        progress(f"soak: {options.concurrency[0]} clients for {options.duration:.0f} s")
        level, memory = asyncio.run(_soak(client, source, options, pid))
        result["levels"].append(asdict(level))
        result["soak"] = {"concurrency": options.concurrency[0], "duration_s": options.duration, **memory}
        return result
    for concurrency in options.concurrency:
        progress(f"concurrency {concurrency}: {options.duration:.0f} s")
        records, wall = asyncio.run(
            run_level(
                client, source, concurrency, duration=options.duration, max_requests=options.max_requests
            )
        )
        result["levels"].append(asdict(summarize(concurrency, records, wall)))
    return result


def load_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Self-consistency of a load result (the same checks the tests make)."""
    checks = []
    for level in result["levels"]:
        c = level["concurrency"]
        errors = sum(level["errors"].values())
        checks.append({"name": f"c={c}: requests = successes + errors", "ok": level["requests"] == level["successes"] + errors,
                       "detail": f"{level['requests']} = {level['successes']} + {errors}"})  # fmt: skip
        lat = level["latency_ms"]
        if lat["p50"] is not None:
            checks.append(
                {
                    "name": f"c={c}: p50 <= p90 <= p99",
                    "ok": lat["p50"] <= lat["p90"] <= lat["p99"],
                    "detail": f"{lat['p50']} <= {lat['p90']} <= {lat['p99']}",
                }
            )
        if level["tokens_counted"] is not None:
            checks.append({"name": f"c={c}: tokens counted by the server = tokens sent", "ok": level["tokens_counted"] == level["tokens_sent"],
                           "detail": f"{level['tokens_counted']} vs {level['tokens_sent']} (differs when the server's tokenizer is another model's)"})  # fmt: skip
    return checks


def default_tokenizer_folder(cache: Path | None = None) -> Path:
    """A folder with the real Qwen3 tokenizer (shipped with qembed) to count tokens for
    endpoints whose model folder we do not have. Built once, under the qembed cache home."""
    import json
    import shutil

    from qembed.common.paths import bench_dir
    from qembed.dev.make_model import _assets, write_tokenizer

    out = cache or bench_dir() / "qwen3-tokenizer"
    if (out / "tokenizer.json").exists() and (out / "config.json").exists():
        return out
    write_tokenizer(out)
    assets = _assets()
    for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
        shutil.copyfile(assets / name, out / name)
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = json.loads((assets / "1_Pooling" / "config.json").read_text())
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return out
