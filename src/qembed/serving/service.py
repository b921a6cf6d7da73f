"""The embedding service: one model worker, one batch queue, async ``embed`` for any router.

Request path (``embed``):

1. admission: a request slot (``--max-concurrent-requests``) or ``QueueFull``;
2. ``Embedder.begin`` (options, inputs, the cache) and ``Embedder.prepare`` on a small thread pool -- tokenization is CPU work that must
   stay off the event loop (it would stall every other request) and off the model
   thread (it would idle the model);
3. ``BatchQueue.submit``: the windows wait with other requests' windows until the model
   worker runs them (token admission: ``--max-queued-tokens``);
4. ``Embedder.finish`` (chunk means, normalization, Matryoshka truncation), also on the
   pool.

No web framework here: the HTTP routes, the search router and tests all call ``embed``.
``ModelService`` is the lifecycle (worker, queue, warm-up, drain, deadline) the embedding
service shares with the reranker's (``serving/rerank_service.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from qembed.embedding.embedder import Embedder, EncodeResult
from qembed.encode.options import EncodeOptions
from qembed.encode.windows import Window
from qembed.errors import RequestTooLarge, Unavailable
from qembed.serving.queue import BatchQueue
from qembed.serving.worker import ModelWorker
from qembed.settings import Settings

log = logging.getLogger(__name__)

WORKER_JOIN_SECONDS = 120.0  # past the deadline: the longest one running batch may take to end
CUDA_BATCH_TOKENS = 16384
CPU_BATCH_TOKENS = 8192
# On CPU the warm-up only needs to touch every code path (thread pools, allocator), not
# to prove the budget fits; a full 8192-token window of a 0.6B model takes tens of seconds there.
CPU_WARMUP_WINDOW = 512
CPU_WARMUP_TOKENS = 2048
_FILLER = "The quick brown fox jumps over the lazy dog while the embedding server warms up. "


def default_max_batch_tokens(device: str) -> int:
    """Padded tokens per model batch when --max-batch-tokens is unset: 16384 on CUDA, 8192 on CPU."""
    return CUDA_BATCH_TOKENS if device.startswith("cuda") else CPU_BATCH_TOKENS


def weights_bytes(model: Any) -> int | None:
    """Bytes of the torch weights (parameters and buffers) of a loaded model, for ``/info``'s
    memory per model; ``None`` when the backend holds no torch module (onnx, openvino).

    Why the weights and not process memory: two models share one process, and what each one
    costs is what an operator sizes a GPU or a pod by; activations depend on
    --max-batch-tokens, not on the model."""
    for candidate in (
        getattr(getattr(model, "backend", None), "model", None),
        getattr(model, "model", None),
        model,
    ):
        params = getattr(candidate, "parameters", None)
        buffers = getattr(candidate, "buffers", None)
        if callable(params) and callable(buffers):
            tensors = [*params(), *buffers()]
            return int(sum(t.numel() * t.element_size() for t in tensors))
    return None


class ModelService:
    """One model thread and its queue, with the lifecycle every served model shares: start,
    warm-up (``ready``), drain on SIGTERM, the shutdown deadline, stop. Subclasses add the
    work (``EmbeddingService.embed``, ``rerank_service.RerankService.score``) and their
    warm-up batch.

    Why a base class and not one service for both models: each model needs its own thread
    (a batch of one model cannot hold the other's rows) and its own queue (token budgets and
    admission are per model), but the lifecycle must be exactly the same for both."""

    log_prefix = ""  # "reranker " in the reranker's log lines
    input_param = "input"  # the request field --max-request-tokens errors name
    too_large_hint = "Send fewer or shorter inputs (long_text='truncate' caps each input at one window)"

    def __init__(
        self,
        run: Callable[[Sequence[Window]], np.ndarray],
        settings: Settings,
        *,
        device: str,
        on_batch: Any = None,
        name: str = "qembed-model",
    ) -> None:
        self.settings = settings
        self.max_batch_tokens = settings.max_batch_tokens or default_max_batch_tokens(device)
        self.queue = BatchQueue(
            max_batch_tokens=self.max_batch_tokens,
            max_batch_size=settings.max_batch_size,
            max_queued_tokens=settings.max_queued_tokens,
            max_concurrent_requests=settings.max_concurrent_requests,
        )
        self.worker = ModelWorker(run, self.queue, on_batch=on_batch, name=name)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, min(4, cores)), thread_name_prefix="qembed-tokenize"
        )
        self.ready = False
        self.warmup_error: str | None = None
        self.draining = False
        self._drain_started: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.aborted_requests = 0  # failed with 503 because the shutdown deadline passed
        self._followers: list[ModelService] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.worker.start()

    def warmup_windows(self) -> list[Window]:
        """The windows of the warm-up batch (each service knows its model's)."""
        raise NotImplementedError

    def also_drain(self, other: ModelService) -> None:
        """``other`` (the reranker's service beside the embedder's) drains when this one does:
        SIGTERM and the HTTP gate know one service; every model of the process stops together."""
        self._followers.append(other)

    async def warm_up(self) -> None:
        """Run the warm-up batch through the real path; then ``ready``."""
        if not self.settings.warmup:
            self.ready = True
            return
        windows = self.warmup_windows()
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await self.queue.submit(windows, admission=False)
        except Exception as exc:  # noqa: BLE001 - reported by /ready and the log
            self.warmup_error = f"{self.log_prefix}warm-up failed: {exc}"
            log.error(
                "%s; /ready stays 503. Lower --max-batch-tokens if this is out of memory.", self.warmup_error
            )
            return
        log.info(
            "%swarm-up: %d x %d tokens in %.2f s",
            self.log_prefix,
            len(windows),
            len(windows[0].ids),
            loop.time() - start,
        )
        self.ready = True

    def begin_drain(self) -> None:
        """SIGTERM: /ready turns 503 and requests arriving from now on are refused (503, by
        the HTTP gate); requests already accepted still finish, until the deadline
        (``--shutdown-timeout``) comes close: then every unfinished request gets a 503
        ``shutting_down`` body (``abort_backlog``), early enough for the answers to reach
        their clients before the HTTP server closes the connections.

        Safe to call from a signal handler: the deadline is set on the event loop."""
        if self._drain_started is not None:
            return
        self._drain_started = time.monotonic()
        self.draining = True
        for other in self._followers:
            other.begin_drain()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._schedule_abort)

    def abort_margin(self) -> float:
        """How long before the deadline unfinished requests are answered (time to write them)."""
        return min(1.0, 0.25 * self.settings.shutdown_timeout)

    def _schedule_abort(self) -> None:
        assert self._loop is not None
        delay = max(0.0, self.settings.shutdown_timeout - self.abort_margin())
        self._loop.call_later(delay, self.abort_backlog)

    def abort_backlog(self) -> int:
        """Fail every request not finished yet with 503 ``shutting_down``; the batch the
        model is running finishes (a forward pass cannot be interrupted) and is ignored."""
        failed = self.queue.abort(
            Unavailable(
                f"The server is shutting down and could not finish this request within --shutdown-timeout "
                f"({self.settings.shutdown_timeout:g} s); retry it on another instance."
            )
        )
        if failed:
            self.aborted_requests += failed
            log.warning("shutdown deadline: %d unfinished requests answered 503", failed)
        return failed

    async def stop(self, timeout: float) -> None:
        """Finish every queued window within ``timeout`` seconds of ``begin_drain`` (SIGTERM)
        when that came first; past it, fail what is left (503) and wait only for the batch
        already running, so the model thread ends before the process does (exit code 0,
        never a thread killed inside the model)."""
        self.begin_drain()
        assert self._drain_started is not None
        left = max(0.0, timeout - (time.monotonic() - self._drain_started))
        done = await asyncio.to_thread(self.worker.stop, left)
        if not done:
            self.abort_backlog()
            done = await asyncio.to_thread(self.worker.stop, WORKER_JOIN_SECONDS)
            if not done:
                log.error("the model thread is still running a batch after %.0f s more", WORKER_JOIN_SECONDS)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def check_request_tokens(self, tokens: int) -> None:
        """``--max-request-tokens``: one request may not buy minutes of model time unnoticed."""
        limit = self.settings.max_request_tokens
        if tokens > limit:
            raise RequestTooLarge(
                f"This request needs {tokens} tokens of model work (windows, prompts and special tokens included); "
                f"the limit is {limit} per request. {self.too_large_hint}, or start the server with a larger "
                "--max-request-tokens (env QEMBED_MAX_REQUEST_TOKENS).",
                param=self.input_param,
            )


class EmbeddingService(ModelService):
    """Owns the embedder's model worker and queue; ``embed`` is safe to call from any coroutine."""

    def __init__(self, embedder: Embedder, settings: Settings, *, on_batch: Any = None) -> None:
        self.embedder = embedder
        super().__init__(embedder.run, settings, device=embedder.info.device, on_batch=on_batch)

    def warmup_windows(self) -> list[Window]:
        """A full batch of the longest window the budget allows (bounded on CPU)."""
        tok = self.embedder.tokenizer
        special = tok.special
        length = min(self.embedder.max_tokens, self.max_batch_tokens)
        total = self.max_batch_tokens
        if not self.embedder.info.device.startswith("cuda"):
            length, total = min(length, CPU_WARMUP_WINDOW), min(total, CPU_WARMUP_TOKENS)
        rows = max(1, min(self.settings.max_batch_size, total // length))
        unit = tok.content_ids([_FILLER])[0]
        room = max(1, length - special.count)
        content = (unit * (room // len(unit) + 1))[:room]
        ids = [*special.head, *content, *special.tail]
        return [Window(ids, owner=i, weight=len(content)) for i in range(rows)]

    # -- work -------------------------------------------------------------------------------
    async def embed(
        self, inputs: Any, options: EncodeOptions | None = None, *, bulk: bool = False, **kwargs: Any
    ) -> EncodeResult:
        """Vectors for ``inputs`` (raw, or ``Inputs`` already parsed by a request body) under
        ``options`` (``EncodeOptions`` or its keyword arguments), batched with every other
        request in flight. The call's flow is ``Embedder.begin`` -> prepare ``todo`` -> the
        queue -> finish -> ``CachedCall.finish``, as in process. Raises qembed errors
        (InputError, QueueFull, ...)."""
        loop = asyncio.get_running_loop()
        with self.queue.admit():
            resolved, call = await loop.run_in_executor(
                self._pool, partial(self.embedder.begin, inputs, options, **kwargs)
            )
            if call.todo is None:  # --cache-size/--cache-dir: every input seen before
                return EncodeResult(*call.finish(None, []))
            prepared = await loop.run_in_executor(self._pool, self.embedder.prepare, call.todo, resolved)
            self.check_request_tokens(prepared.prompt_tokens)
            vectors = await self.queue.submit(prepared.windows, bulk=bulk)
            out = await loop.run_in_executor(self._pool, self.embedder.finish, prepared, vectors)
        return EncodeResult(*call.finish(out, prepared.tokens_per_input()))

    async def tokenize(
        self, inputs: Any, options: EncodeOptions | None = None, **kwargs: Any
    ) -> list[list[int]]:
        """Token ids per input as the model reads them (untruncated), off the event loop."""
        loop = asyncio.get_running_loop()
        with self.queue.admit():
            return await loop.run_in_executor(
                self._pool, partial(self.embedder.tokenize, inputs, options, **kwargs)
            )
