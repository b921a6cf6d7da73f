"""Fair scheduling, cancellation and the shutdown deadline in the batch queue (no HTTP).

A short request arriving behind a big one waits about one batch (not the big one's whole
run); the big one still gets every other batch however many short ones arrive; bulk work
yields to interactive work; cancelled requests lose their unstarted windows; abort() fails
every unfinished request with the error given."""

from __future__ import annotations

import asyncio

import pytest

from qembed.errors import Unavailable
from tests.serving.test_queue import make, until, windows


def _owner_batches(model, marker: int) -> list[int]:
    """Indices of the batches that held a window whose first id is ``marker``."""
    return [i for i, batch in enumerate(model.firsts) if marker in batch]


def _recording(model):
    model.firsts = []
    inner = model.__call__

    def run(batch):
        model.firsts.append([w.ids[0] for w in batch])
        return inner(batch)

    return run


def make_fair(**kw):
    queue, worker, model, stats = make(**kw)
    worker._run = _recording(model)
    return queue, worker, model, stats


def test_a_short_request_does_not_wait_for_a_big_one() -> None:
    async def main() -> None:
        queue, worker, model, _ = make_fair(max_batch_tokens=64, max_batch_size=4)
        queue.pause()
        worker.start()
        big = asyncio.create_task(queue.submit(windows(*[16] * 40, first=1)))  # 10 full batches alone
        await until(lambda: queue.queued_requests == 1)
        small = asyncio.create_task(queue.submit(windows(3, first=2)))
        await until(lambda: queue.queued_requests == 2)
        queue.resume()
        await asyncio.gather(big, small)
        worker.stop(5)
        served = _owner_batches(model, 2)
        assert served and served[0] <= 1, model.firsts  # within the first two batches, not after ten
        assert len(model.firsts) <= 11  # the big request lost at most one batch to it

    asyncio.run(main())


def test_a_stream_of_short_requests_never_starves_the_big_one() -> None:
    async def main() -> None:
        queue, worker, model, _ = make_fair(max_batch_tokens=64, max_batch_size=4)
        queue.pause()
        worker.start()
        big = asyncio.create_task(queue.submit(windows(*[16] * 12, first=1)))  # 3 batches alone
        await until(lambda: queue.queued_requests == 1)
        smalls = [asyncio.create_task(queue.submit(windows(*[16] * 4, first=2))) for _ in range(12)]
        await until(lambda: queue.queued_requests == 13)
        queue.resume()
        await asyncio.gather(big, *smalls)
        worker.stop(5)
        big_done_after = _owner_batches(model, 1)[-1] + 1  # batches run until its last window
        # alone: 3 batches; with 12 competing requests it gets every other batch: at most 2x (+1)
        assert big_done_after <= 2 * 3 + 1, model.firsts

    asyncio.run(main())


def test_bulk_yields_to_interactive() -> None:
    async def main() -> None:
        queue, worker, model, _ = make_fair(max_batch_tokens=64, max_batch_size=4)
        queue.pause()
        worker.start()
        bulk = asyncio.create_task(queue.submit(windows(3, first=1), bulk=True))  # smaller, but bulk
        older = asyncio.create_task(queue.submit(windows(*[16] * 8, first=3)))
        await until(lambda: queue.queued_requests == 2)
        interactive = asyncio.create_task(queue.submit(windows(*[16] * 4, first=2)))
        await until(lambda: queue.queued_requests == 3)
        queue.resume()
        await asyncio.gather(bulk, older, interactive)
        worker.stop(5)
        # turn 1: the oldest (bulk, alone in its length bucket); turn 2: fewest tokens among interactive
        assert 2 in model.firsts[1] and 1 not in model.firsts[1], model.firsts

    asyncio.run(main())


def test_cancelled_windows_are_counted_and_never_computed() -> None:
    async def main() -> None:
        queue, worker, model, _ = make_fair()
        queue.pause()
        worker.start()
        task = asyncio.create_task(queue.submit(windows(5, 6, 7, first=4)))
        await until(lambda: queue.queued_windows == 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (queue.cancelled_requests, queue.dropped_windows) == (1, 3)
        queue.resume()
        await queue.submit(windows(4, first=5))
        worker.stop(5)
        assert all(4 not in firsts for firsts in model.firsts)

    asyncio.run(main())


def test_abort_fails_every_unfinished_request() -> None:
    async def main() -> None:
        queue, worker, _, _ = make_fair()
        queue.pause()
        worker.start()
        tasks = [asyncio.create_task(queue.submit(windows(5, first=6))) for _ in range(3)]
        await until(lambda: queue.queued_requests == 3)
        assert queue.abort(Unavailable("deadline")) == 3
        for task in tasks:
            with pytest.raises(Unavailable, match="deadline"):
                await task
        assert queue.queued_windows == 0 and queue.closed
        with pytest.raises(Unavailable):
            await queue.submit(windows(2))
        assert worker.stop(5)  # the worker ends: nothing left, queue closed

    asyncio.run(main())
