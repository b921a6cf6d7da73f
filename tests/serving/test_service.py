"""EmbeddingService on the tiny model: a short request is not stuck behind a big one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from qembed import Embedder, Settings
from qembed.serving.service import EmbeddingService


@pytest.fixture(scope="module")
def short_embedder(tiny_model_dir: Path) -> Embedder:
    return Embedder(str(tiny_model_dir), max_tokens=64)


def test_a_short_request_sent_during_a_big_one_is_served_in_a_fraction_of_its_time(short_embedder) -> None:
    """The issue's head-of-line case, as a ratio in one run: the small request's latency is at
    most a quarter of the big one's (it used to wait for the whole big request)."""

    async def main() -> tuple[float, float, np.ndarray]:
        service = EmbeddingService(
            short_embedder, Settings(warmup=False, max_batch_tokens=512, max_batch_size=8)
        )
        service.start()
        loop = asyncio.get_running_loop()
        big_text = " ".join(f"word{i}" for i in range(6000))  # ~200 windows of 64 tokens: ~25 batches
        start = loop.time()
        big = asyncio.create_task(service.embed([big_text]))
        while service.queue.queued_windows == 0 or service.worker.batches_run == 0:  # the big one is running
            await asyncio.sleep(0.001)
        small_start = loop.time()
        small = await service.embed(["a short query"])
        small_latency = loop.time() - small_start
        await big
        big_latency = loop.time() - start
        await service.stop(5)
        return small_latency, big_latency, small.vectors

    small_latency, big_latency, vectors = asyncio.run(main())
    assert small_latency <= big_latency / 4, (small_latency, big_latency)
    alone = short_embedder.encode(["a short query"])
    assert float(np.dot(vectors[0], alone[0])) >= 0.99999  # and it is the same vector
