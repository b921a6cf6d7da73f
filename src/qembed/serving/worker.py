"""The model worker: the one thread that owns the model.

Why one thread: a model batch already uses every core (CPU) or the whole GPU, so two
batches at once only fight; and the asyncio loop must never block on the model, or
health checks and new requests would stall behind a long batch. The worker takes a
batch from ``BatchQueue``, runs ``Embedder.run`` on it and hands the vectors back; the
queue wakes the waiting requests on their loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from qembed.encode.windows import Window
from qembed.errors import ModelRunError, QembedError
from qembed.serving.queue import Batch, BatchQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchStats:
    """What one batch cost, for metrics."""

    windows: int
    tokens: int
    padded_tokens: int
    seconds: float
    failed: bool


class ModelWorker:
    """Runs batches from ``queue`` through ``run`` on a dedicated thread."""

    def __init__(
        self,
        run: Callable[[Sequence[Window]], np.ndarray],
        queue: BatchQueue,
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "qembed-model",
    ) -> None:
        self._run = run
        self.queue = queue
        self._on_batch = on_batch
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._ewma_tps = 0.0
        self.batches_run = 0  # batches finished (ok or failed) since start

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> bool:
        """Close the queue, let the worker finish what is queued, and wait for it.
        True when the thread ended within ``timeout``."""
        self.queue.close()
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            batch = self.queue.next_batch()
            if batch is None:
                return
            self._run_one(batch)

    def _run_one(self, batch: Batch) -> None:
        """Run one batch, record it, then hand out its vectors (or its error).

        Recording before delivering means a client that has its answer also finds its
        batch in /metrics and in the measured throughput; the observer is a few counter
        updates, so the reply does not wait noticeably."""
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            vectors = self._run(batch.windows)
        except Exception as exc:  # noqa: BLE001 - any failure fails exactly this batch's requests
            if isinstance(exc, QembedError):
                error = exc
            else:
                error = ModelRunError(
                    f"The model failed on a batch of {len(batch.windows)} windows "
                    f"({batch.padded_tokens} padded tokens): {type(exc).__name__}: {exc}. "
                    "If this is an out-of-memory error, lower --max-batch-tokens."
                )
                error.__cause__ = exc
            log.error("model batch failed: %s", error, exc_info=exc)
        seconds = time.perf_counter() - start
        self.batches_run += 1
        self._record(batch, seconds, failed=error is not None)
        if error is not None:
            self.queue.fail(batch, error)
        else:
            self.queue.complete(batch, vectors)

    def _record(self, batch: Batch, seconds: float, *, failed: bool) -> None:
        if not failed and seconds > 0:
            tps = batch.tokens / seconds
            self._ewma_tps = tps if self._ewma_tps == 0 else 0.8 * self._ewma_tps + 0.2 * tps
            self.queue.tokens_per_second = self._ewma_tps
        if self._on_batch is not None:
            try:
                self._on_batch(
                    BatchStats(len(batch.windows), batch.tokens, batch.padded_tokens, seconds, failed)
                )
            except Exception:  # noqa: BLE001 - metrics must never stop the model thread
                log.exception("batch observer failed")
