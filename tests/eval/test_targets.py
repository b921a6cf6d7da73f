"""The HTTP target against a small OpenAI-compatible server that embeds with the real
in-process engine: the same numbers as in process, in every instruction mode that applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qembed.client import base_url as _base_url
from qembed.eval.datasets import PairData, load_beir
from qembed.eval.prompts import Prompting
from qembed.eval.targets import HttpTarget, InProcessTarget, TargetError
from qembed.eval.tasks import evaluate_retrieval, evaluate_sts

PAIRS = PairData(
    "toy",
    [
        "A man plays guitar.",
        "A dog runs.",
        "Rain falls on the city.",
        "A child reads a book.",
        "Two cats sleep.",
        "The stock market fell.",
    ],
    [
        "Someone plays an instrument.",
        "A cat sleeps.",
        "It is raining downtown.",
        "A kid is reading.",
        "Cats are napping.",
        "Shares dropped today.",
    ],
    np.array([4.2, 0.8, 4.6, 4.8, 3.9, 4.1]),
)


def test_base_url_forms() -> None:
    assert _base_url("http://h:1") == "http://h:1/v1"
    assert _base_url("http://h:1/v1/") == "http://h:1/v1"
    assert _base_url("https://api.example.com/v1/embeddings") == "https://api.example.com/v1"
    with pytest.raises(ValueError, match="http"):
        _base_url("h:1")


@pytest.mark.parametrize("mode", ["client", "server"])
def test_http_numbers_equal_in_process(
    fake_server: Any, tiny_embedder: Any, make_beir: Any, mode: str
) -> None:
    prompting_sts, prompting_ret = Prompting("sts", mode=mode), Prompting("retrieval", mode=mode)
    local = InProcessTarget(tiny_embedder)
    remote = HttpTarget(fake_server.url, batch_size=4, concurrency=2)
    data = load_beir(make_beir(n_docs=20, n_queries=4))
    for evaluate, dataset, prompting in (
        (evaluate_sts, PAIRS, prompting_sts),
        (evaluate_retrieval, data, prompting_ret),
    ):
        a = evaluate(local, dataset, prompting=prompting)
        b = evaluate(remote, dataset, prompting=prompting)
        assert a.scores.keys() == b.scores.keys()
        for name in a.scores:
            assert b.scores[name] == pytest.approx(a.scores[name], abs=1e-4), name
    bodies = [r["body"] for r in fake_server.requests]
    assert all(
        len(b["input"]) <= 4 and b["model"] == "fake-model" for b in bodies
    )  # batched; name from /v1/models
    query_bodies = [b for b in bodies if any("query" in t and "topic" in t for t in b["input"])]
    if mode == "client":
        assert all("task" not in b and "input_type" not in b for b in bodies)
        assert all(
            t.startswith("Instruct: Given a web search query") for b in query_bodies for t in b["input"]
        )
    else:
        assert all(b["input_type"] == "query" and b["task"] == "retrieval" for b in query_bodies)
        assert not any(t.startswith("Instruct:") for b in bodies for t in b["input"])
    summary = remote.stats.summary()
    assert summary["server_rss_mib"] == 100.0  # from the fake /metrics gauge
    assert summary["texts_per_second"] and summary["latency_ms_p95"] is not None
    remote.close()


def test_none_mode_sends_raw_text_only(fake_server: Any) -> None:
    target = HttpTarget(fake_server.url, model_name="given")
    vectors = target.embed(["x y", "z"], Prompting("retrieval", mode="none"), "query")
    assert vectors.shape == (2, 64)
    assert fake_server.requests[-1]["body"] == {
        "model": "given",
        "encoding_format": "float",
        "input": ["x y", "z"],
    }


def test_api_key_retries_and_errors(fake_server: Any) -> None:
    fake_server.api_key = "s3cret"
    with pytest.raises(TargetError, match="401: bad key"):
        HttpTarget(fake_server.url, model_name="m").embed(["a"], Prompting("sts"), "query")
    target = HttpTarget(fake_server.url, model_name="m", api_key="s3cret")
    fake_server.fail_next = [429, 503]
    assert target.embed(["a"], Prompting("sts"), "query").shape == (1, 64)  # retried after Retry-After: 0
    assert fake_server.requests[-1]["auth"] == "Bearer s3cret"
    fake_server.fail_next = [400]
    with pytest.raises(TargetError, match="400: injected 400"):
        target.embed(["a"], Prompting("sts"), "query")


def test_unreachable_endpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="cannot reach"):
        HttpTarget("http://127.0.0.1:9")  # discard port: nothing listens
