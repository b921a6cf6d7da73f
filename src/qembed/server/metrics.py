"""Prometheus metrics of one server (its own registry, so that two apps in one process --
tests, or an app embedded in another service -- never share or clash on counters).

Batch figures are observed on the model thread through ``observe_batch``; queue depth is
read at scrape time from the queue itself (``Gauge.set_function``), so it is never stale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qembed.serving.worker import BatchStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
_POW2 = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # process_resident_memory_bytes & co: what load/soak benchmarks read for the server's RSS.
        ProcessCollector(registry=r)
        self.requests = Counter(
            "qembed_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "qembed_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        # Always 1; the labels say which model this process serves, so dashboards can join
        # the unlabelled embedder series (one embedder per server) to a model, a backend and
        # a precision, and tell replicas serving different builds apart.
        self.model_info = Gauge(
            "qembed_model_info",
            "The model served: 1, with its name, hub id, role, backend, dtype, dimension, quantization.",
            ["model", "model_id", "role", "backend", "dtype", "dimension", "quantization"],
            registry=r,
        )
        self.in_flight = Gauge("qembed_requests_in_flight", "HTTP requests being served.", registry=r)
        self.errors = Counter(
            "qembed_errors", "Error responses by kind (the OpenAI error code).", ["kind"], registry=r
        )
        self.inputs = Counter(
            "qembed_inputs", "Inputs embedded (texts or token lists), by requests that succeeded.", registry=r
        )
        self.prompt_tokens = Counter(
            "qembed_prompt_tokens", "Tokens of the inputs embedded (usage.prompt_tokens).", registry=r
        )
        self.batch_inputs = Histogram(
            "qembed_batch_inputs", "Windows (inputs) per model batch.", buckets=_POW2, registry=r
        )
        self.batch_tokens = Histogram(
            "qembed_batch_tokens", "Real (unpadded) tokens per model batch.", buckets=_TOKENS, registry=r
        )
        self.batch_padded_tokens = Histogram(
            "qembed_batch_padded_tokens",
            "Padded tokens per model batch (what the model pays for).",
            buckets=_TOKENS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "qembed_batch_duration_seconds", "Model time per batch.", buckets=_LATENCY, registry=r
        )
        self.batch_failures = Counter("qembed_batch_failures", "Model batches that raised.", registry=r)
        self.tokens = Counter("qembed_model_tokens", "Tokens run through the model.", registry=r)
        self.tokens_per_second = Gauge(
            "qembed_tokens_per_second", "Model throughput, moving average over recent batches.", registry=r
        )
        self.cache_hits = Counter(
            "qembed_cache_hits", "Inputs answered from the embedding cache.", registry=r
        )
        self.cache_misses = Counter(
            "qembed_cache_misses", "Inputs looked up in the embedding cache and not found.", registry=r
        )
        self.queue_inputs = Gauge("qembed_queue_inputs", "Windows waiting for the model.", registry=r)
        self.queue_tokens = Gauge("qembed_queue_tokens", "Tokens waiting for the model.", registry=r)
        self.queue_requests = Gauge(
            "qembed_queue_requests", "Requests with windows waiting for the model.", registry=r
        )
        self.ready = Gauge("qembed_ready", "1 once the warm-up pass is done.", registry=r)
        # Totals since start, read from the queue at scrape time.
        self.cancelled_requests = Gauge(
            "qembed_cancelled_requests",
            "Requests whose client went away before the answer (499), since start.",
            registry=r,
        )
        self.dropped_windows = Gauge(
            "qembed_dropped_windows",
            "Windows never computed because their client went away, since start.",
            registry=r,
        )
        self.aborted_requests = Gauge(
            "qembed_shutdown_aborted_requests",
            "Requests answered 503 because the shutdown deadline passed.",
            registry=r,
        )

        # The reranker (--rerank-model), labelled by model: its own queue and model thread.
        self.rerank_documents = Counter(
            "qembed_rerank_documents",
            "Documents (query-document pairs) scored, by requests that succeeded, per reranker.",
            ["model"],
            registry=r,
        )
        self.rerank_prompt_tokens = Counter(
            "qembed_rerank_prompt_tokens",
            "Tokens of the pairs scored (usage.prompt_tokens), per reranker.",
            ["model"],
            registry=r,
        )
        self.rerank_batch_pairs = Histogram(
            "qembed_rerank_batch_pairs", "Pairs per reranker batch.", ["model"], buckets=_POW2, registry=r
        )
        self.rerank_batch_seconds = Histogram(
            "qembed_rerank_batch_duration_seconds",
            "Model time per reranker batch.",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.rerank_batch_failures = Counter(
            "qembed_rerank_batch_failures", "Reranker batches that raised.", ["model"], registry=r
        )
        self.rerank_queue_tokens = Gauge(
            "qembed_rerank_queue_tokens", "Tokens waiting for the reranker.", ["model"], registry=r
        )
        self.rerank_ready = Gauge(
            "qembed_rerank_ready", "1 once the reranker's warm-up pass is done.", ["model"], registry=r
        )
        self.rerank_dropped_pairs = Gauge(
            "qembed_rerank_dropped_pairs",
            "Pairs never scored because their client went away, since start.",
            ["model"],
            registry=r,
        )

    def describe_model(self, role: str, served_name: str, info: Any) -> None:
        """Set ``qembed_model_info`` for one served model (``info``: its ``ModelInfo`` or
        ``RerankModelInfo``; a reranker has no dimension and runs on torch)."""
        self.model_info.labels(
            model=served_name,
            model_id=info.model_id,
            role=role,
            backend=getattr(info, "backend", "torch"),
            dtype=info.dtype,
            dimension=str(getattr(info, "dimension", "")),
            quantization="int8" if getattr(info, "quantization", None) else "none",
        ).set(1)

    def watch_reranker(
        self,
        model: str,
        *,
        queued_tokens: Callable[[], float],
        ready: Callable[[], float],
        dropped: Callable[[], float],
    ) -> Callable[[BatchStats], None]:
        """Gauges read from the reranker's queue at scrape time; returns its batch observer."""
        self.rerank_queue_tokens.labels(model=model).set_function(queued_tokens)
        self.rerank_ready.labels(model=model).set_function(ready)
        self.rerank_dropped_pairs.labels(model=model).set_function(dropped)
        pairs = self.rerank_batch_pairs.labels(model=model)
        seconds = self.rerank_batch_seconds.labels(model=model)
        failures = self.rerank_batch_failures.labels(model=model)

        def observe(stats: BatchStats) -> None:
            if stats.failed:
                failures.inc()
                return
            pairs.observe(stats.windows)
            seconds.observe(stats.seconds)

        return observe

    def watch_queue(
        self,
        windows: Callable[[], float],
        tokens: Callable[[], float],
        requests: Callable[[], float],
        tps: Callable[[], float],
    ) -> None:
        self.queue_inputs.set_function(windows)
        self.queue_tokens.set_function(tokens)
        self.queue_requests.set_function(requests)
        self.tokens_per_second.set_function(tps)

    def observe_batch(self, stats: BatchStats) -> None:
        if stats.failed:
            self.batch_failures.inc()
            return
        self.batch_inputs.observe(stats.windows)
        self.batch_tokens.observe(stats.tokens)
        self.batch_padded_tokens.observe(stats.padded_tokens)
        self.batch_seconds.observe(stats.seconds)
        self.tokens.inc(stats.tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
