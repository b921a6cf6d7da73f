"""RerankService over a deterministic PairScorer: ranking, limits, batching across requests,
cancellation, drain. The queue and worker are the real ones; only the model is a fake."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from qembed import Settings
from qembed.errors import InputError, InputTooLong, ModelOutputError, QueueFull, RequestTooLarge, Unavailable
from qembed.serving.rerank_service import RerankService

from .rerank_fakes import FakeScorer

DOCS = ["the cat sat on the mat", "france is in europe", "the capital of france is paris"]


def run(
    main: Callable[[RerankService], Awaitable[Any]], scorer: FakeScorer | None = None, **settings: Any
) -> Any:
    async def wrapper() -> Any:
        service = RerankService(scorer or FakeScorer(), Settings(warmup=False, **settings))
        service.start()
        try:
            return await main(service)
        finally:
            await service.stop(5)

    return asyncio.run(wrapper())


async def until(condition: Callable[[], bool]) -> None:
    """Wait (on the loop, without blocking the model thread) until ``condition`` holds."""
    for _ in range(20_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def test_rank_orders_by_relevance_and_keeps_indices() -> None:
    async def main(service: RerankService) -> Any:
        return await service.rank("capital of france", DOCS, return_documents=True)

    ranked, tokens = run(main)
    assert [r.index for r in ranked] == [2, 1, 0]
    assert [r.document for r in ranked] == [DOCS[2], DOCS[1], DOCS[0]]
    assert ranked[0].raw_score == 2.5 and ranked[2].raw_score == -0.5  # 3 query words found; none
    assert ranked[0].score == pytest.approx(1 / (1 + np.exp(-2.5)), abs=1e-6)
    assert all(0.0 < r.score < 1.0 for r in ranked)
    assert tokens > 0


def test_top_n_and_ties_keep_the_callers_order() -> None:
    async def main(service: RerankService) -> Any:
        return await service.rank("zebra", ["a", "b", "c", "zebra"], top_n=2)

    ranked, _ = run(main)
    assert [r.index for r in ranked] == [3, 0]  # the match, then the first of the equal ones
    assert all(r.document is None for r in ranked)


@pytest.mark.parametrize(
    ("query", "documents", "top_n", "param"),
    [
        ("", ["x"], None, "query"),
        ("   ", ["x"], None, "query"),
        ("q", [], None, "documents"),
        ("q", ["ok", 3], None, "documents[1]"),
        ("q", ["ok", " "], None, "documents[1]"),
        ("q", ["x"], 0, "top_n"),
        ("q", ["x"], True, "top_n"),
    ],
)
def test_bad_input_names_the_field(query: str, documents: list[Any], top_n: Any, param: str) -> None:
    async def main(service: RerankService) -> Any:
        return await service.rank(query, documents, top_n=top_n)

    with pytest.raises(InputError) as info:
        run(main)
    assert info.value.param == param


def test_limits_documents_and_request_tokens() -> None:
    async def many(service: RerankService) -> Any:
        return await service.rank("q", ["d"] * 4)

    with pytest.raises(RequestTooLarge, match="4 documents.*limit is 3.*--max-client-batch-size"):
        run(many, max_client_batch_size=3)

    async def long(service: RerankService) -> Any:
        return await service.rank("q", ["w " * 50] * 3)

    with pytest.raises(RequestTooLarge, match="--max-request-tokens") as info:
        run(long, max_request_tokens=100)
    assert info.value.param == "documents"


def test_long_text_policy_per_request_and_from_the_server() -> None:
    long_doc = "word " * 200

    async def refuse(service: RerankService) -> Any:
        return await service.score([("q", long_doc)], long_text="error")

    with pytest.raises(InputTooLong):
        run(refuse)

    async def default(service: RerankService) -> Any:
        return await service.score([("q", long_doc)])

    assert run(default).truncated == [True]  # the server default truncates
    with pytest.raises(InputTooLong):
        run(default, long_text="error")  # --long-text error refuses


def test_instruction_defaults_and_cross_encoders() -> None:
    scorer = FakeScorer()

    async def both(service: RerankService) -> Any:
        await service.score([("q", "d")])
        await service.score([("q", "d")], instruction="Find code")

    run(both, scorer, rerank_instruction="Server default")
    assert scorer.instructions == ["Server default", "Find code"]

    async def with_instruction(service: RerankService) -> Any:
        return await service.score([("q", "d")], instruction="Find code")

    with pytest.raises(InputError, match="cross-encoder; it takes no instruction") as info:
        run(with_instruction, FakeScorer(instruction=None))
    assert info.value.param == "instruction"


def test_pairs_of_several_requests_share_a_batch_and_score_as_alone() -> None:
    scorer = FakeScorer()

    async def main(service: RerankService) -> Any:
        alone = await service.score([("capital of france", d) for d in DOCS])
        scorer.batches.clear()
        service.queue.pause()
        tasks = [
            asyncio.create_task(service.score([("capital of france", d) for d in DOCS])),
            asyncio.create_task(service.score([("the cat", d) for d in DOCS])),
        ]
        await until(lambda: service.queue.queued_windows == 6)
        service.queue.resume()
        first, second = await asyncio.gather(*tasks)
        return alone, first, second

    alone, first, second = run(main, scorer)
    assert scorer.batches == [6]  # one model batch for both requests
    np.testing.assert_array_equal(first.raw, alone.raw)
    assert second.raw.tolist() == [1.5, -0.5, 0.5]  # "the cat": both words in doc 0, "the" in doc 2


def test_queued_tokens_admission_answers_queue_full() -> None:
    async def main(service: RerankService) -> Any:
        service.queue.pause()
        first = asyncio.create_task(service.score([("q", "a b c d e f")] * 4))
        await until(lambda: service.queue.queued_windows == 4)
        with pytest.raises(QueueFull, match="--max-queued-tokens"):
            await service.score([("q", "a b c d e f")] * 4)
        service.queue.resume()
        return await first

    assert len(run(main, max_queued_tokens=60).raw) == 4  # the one accepted is served


def test_a_cancelled_request_drops_its_pairs() -> None:
    scorer = FakeScorer()

    async def main(service: RerankService) -> Any:
        service.queue.pause()
        task = asyncio.create_task(service.score([("q", "d")] * 5))
        await until(lambda: service.queue.queued_windows == 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        service.queue.resume()
        after = await service.score([("q", "q")])
        return service.queue.dropped_windows, after

    dropped, after = run(main, scorer)
    assert dropped == 5 and scorer.batches == [1]  # only the later request ran
    assert after.raw.tolist() == [0.5]


def test_non_finite_scores_are_a_model_error() -> None:
    class Broken(FakeScorer):
        def run(self, windows: Any) -> np.ndarray:
            return np.full(len(windows), np.nan, dtype=np.float32)

    async def main(service: RerankService) -> Any:
        return await service.score([("q", "d")])

    with pytest.raises(ModelOutputError, match="non-finite"):
        run(main, Broken())


def test_warm_up_runs_real_pairs_and_drain_follows_the_embedders_service() -> None:
    scorer = FakeScorer(max_length=48)

    async def main() -> Any:
        leader = RerankService(FakeScorer(), Settings(warmup=False))
        service = RerankService(scorer, Settings(max_batch_size=4))
        leader.also_drain(service)
        for s in (leader, service):
            s.start()
        await service.warm_up()
        warm = (service.ready, list(scorer.batches))
        leader.begin_drain()  # SIGTERM reaches the embedder's service; the reranker's drains too
        assert service.draining
        await asyncio.gather(leader.stop(5), service.stop(5))
        assert not service.worker.alive
        with pytest.raises(Unavailable):
            await service.score([("q", "d")])
        return warm

    (ready, batches) = asyncio.run(main())
    assert ready and batches == [4]  # a full batch of pairs at the window length
