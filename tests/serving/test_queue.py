"""BatchQueue + ModelWorker without HTTP: packing, all-or-nothing results, failure isolation,
admission control, cancellation, draining."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from qembed.encode.windows import Window
from qembed.errors import ModelRunError, QueueFull, Unavailable
from qembed.serving.queue import BatchQueue
from qembed.serving.worker import BatchStats, ModelWorker

POISON = 999


def windows(*lengths: int, first: int = 1) -> list[Window]:
    """Windows whose ids encode their length (and a marker in the first id)."""
    return [Window([first] + [7] * (n - 1), owner=i, weight=n) for i, n in enumerate(lengths)]


class Recorder:
    """A model: vector = [length, first id]; raises on a window starting with POISON."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, batch: Sequence[Window]) -> np.ndarray:
        self.batches.append([len(w.ids) for w in batch])
        if any(w.ids[0] == POISON for w in batch):
            raise RuntimeError("boom")
        return np.array([[len(w.ids), w.ids[0]] for w in batch], dtype=np.float32)


def make(
    max_batch_tokens: int = 64,
    max_batch_size: int = 8,
    observer: Callable[[BatchStats], None] | None = None,
    **kw: int,
) -> tuple[BatchQueue, ModelWorker, Recorder, list[BatchStats]]:
    queue = BatchQueue(
        max_batch_tokens=max_batch_tokens,
        max_batch_size=max_batch_size,
        max_queued_tokens=kw.get("max_queued_tokens", 10_000),
        max_concurrent_requests=kw.get("max_concurrent_requests", 100),
    )
    model, stats = Recorder(), []
    worker = ModelWorker(model, queue, on_batch=observer or stats.append)
    return queue, worker, model, stats


async def until(condition, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


def test_requests_share_batches_and_get_their_own_vectors_in_order() -> None:
    async def main() -> None:
        queue, worker, model, stats = make(max_batch_tokens=64, max_batch_size=8)
        queue.pause()
        worker.start()
        jobs = [windows(3, 9, 5, first=10 + k) for k in range(4)]
        tasks = [asyncio.create_task(queue.submit(w)) for w in jobs]
        await until(lambda: queue.queued_requests == 4)
        assert queue.queued_windows == 12 and queue.queued_tokens == 4 * 17
        queue.resume()
        results = await asyncio.gather(*tasks)
        for k, out in enumerate(results):
            np.testing.assert_array_equal(out, [[3, 10 + k], [9, 10 + k], [5, 10 + k]])
        # Budget 64 padded tokens, 8 rows: the four 9-token windows run together, etc.
        assert all(len(b) * max(b) <= 64 and len(b) <= 8 for b in model.batches)
        assert max(len(b) for b in model.batches) > 3  # windows of several requests in one batch
        # Every batch is recorded before its vectors are handed out: nothing to wait for.
        assert sum(s.windows for s in stats) == 12
        assert queue.queued_windows == 0 and queue.queued_tokens == 0
        worker.stop(5)

    asyncio.run(main())


def test_a_failing_batch_fails_exactly_its_requests() -> None:
    async def main() -> None:
        # One window per batch: the poisoned request's batch fails, nobody else's.
        queue, worker, model, _ = make(max_batch_tokens=4, max_batch_size=1)
        queue.pause()
        worker.start()
        good1 = asyncio.create_task(queue.submit(windows(4, 4, first=1)))
        bad = asyncio.create_task(queue.submit(windows(4, 4, 4, first=POISON)))
        good2 = asyncio.create_task(queue.submit(windows(4, first=2)))
        await until(lambda: queue.queued_requests == 3)
        queue.resume()
        r1, r2 = await good1, await good2
        assert r1.shape == (2, 2) and r2.shape == (1, 2)
        with pytest.raises(ModelRunError, match="RuntimeError: boom"):
            await bad
        # Its other windows were dropped, not computed: 2 + 1 good windows, 1 failed batch.
        assert len(model.batches) == 4
        assert queue.queued_windows == 0
        worker.stop(5)

    asyncio.run(main())


def test_oldest_window_always_runs_next() -> None:
    async def main() -> None:
        queue, worker, model, _ = make(max_batch_tokens=32, max_batch_size=4)
        queue.pause()
        worker.start()
        first = asyncio.create_task(queue.submit(windows(2, first=1)))
        await until(lambda: queue.queued_requests == 1)
        # Longer windows arrive later; longest-first packing alone would run them first.
        later = [asyncio.create_task(queue.submit(windows(30, first=5))) for _ in range(5)]
        await until(lambda: queue.queued_requests == 6)
        queue.resume()
        await asyncio.gather(first, *later)
        assert 2 in model.batches[0]
        worker.stop(5)

    asyncio.run(main())


def test_admission_control() -> None:
    async def main() -> None:
        queue, worker, _, _ = make(max_queued_tokens=10, max_concurrent_requests=1)
        queue.pause()
        worker.start()
        with queue.admit():
            with pytest.raises(QueueFull, match="--max-concurrent-requests") as full:
                with queue.admit():
                    pass
            assert full.value.retry_after >= 1
        first = asyncio.create_task(queue.submit(windows(8)))
        await until(lambda: queue.queued_tokens == 8)
        with pytest.raises(QueueFull, match="--max-queued-tokens"):
            await queue.submit(windows(3))
        # An empty queue takes a request larger than the limit (it could never run otherwise).
        queue.resume()
        await first
        big = await queue.submit(windows(30))
        assert big.shape == (1, 2)
        worker.stop(5)

    asyncio.run(main())


def test_cancelled_request_leaves_the_queue() -> None:
    async def main() -> None:
        queue, worker, model, _ = make()
        queue.pause()
        worker.start()
        task = asyncio.create_task(queue.submit(windows(5, 6, first=3)))
        await until(lambda: queue.queued_windows == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert queue.queued_windows == 0 and queue.queued_tokens == 0 and queue.queued_requests == 0
        queue.resume()
        out = await queue.submit(windows(4))
        assert out.shape == (1, 2) and model.batches == [[4]]
        worker.stop(5)

    asyncio.run(main())


def test_close_finishes_queued_work_then_refuses() -> None:
    async def main() -> None:
        queue, worker, _, _ = make(max_batch_tokens=8, max_batch_size=1)
        queue.pause()
        worker.start()
        tasks = [asyncio.create_task(queue.submit(windows(4, 4))) for _ in range(3)]
        await until(lambda: queue.queued_requests == 3)
        stopped = threading.Event()
        stopper = threading.Thread(target=lambda: (worker.stop(10), stopped.set()))
        stopper.start()  # close() also lifts the pause: queued work drains
        results = await asyncio.gather(*tasks)
        assert all(r.shape == (2, 2) for r in results)
        await until(stopped.is_set)
        assert not worker.alive
        with pytest.raises(Unavailable):
            await queue.submit(windows(2))

    asyncio.run(main())


def test_a_batch_is_recorded_before_its_vectors_are_handed_out() -> None:
    """A client holding its answer finds its batch in the metrics already."""

    async def main() -> None:
        observing, release = threading.Event(), threading.Event()
        recorded: list[BatchStats] = []

        def observer(stats: BatchStats) -> None:
            observing.set()
            release.wait(10)
            recorded.append(stats)

        queue, worker, _, _ = make(observer=observer)
        worker.start()
        task = asyncio.create_task(queue.submit(windows(3, 4)))
        await until(observing.is_set)
        for _ in range(20):  # let the loop run any delivery already scheduled by the worker
            await asyncio.sleep(0)
        assert not task.done() and recorded == []
        release.set()
        out = await task
        assert [s.windows for s in recorded] == [2] and out.shape == (2, 2)
        worker.stop(5)

    asyncio.run(main())
