"""The rerank routes (/v1/rerank, /v2/rerank, TEI's /rerank, vLLM's /score) served beside the
tiny embedder, over a deterministic PairScorer (tests/serving/rerank_fakes.py: the score is
the number of query words a document holds, minus 0.5), through the real app, queue and
model thread. Shapes, ordering, top_n, documents, errors, auth, metrics, /v1/models, /info,
/ready, and the cohere SDK against base_url."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from qembed import Embedder
from qembed.rerank.protocol import PairScorer
from qembed.server.app import create_app

from ..serving.rerank_fakes import FakeScorer
from .conftest import LiveServer, metric_samples, ready_client, serve_process, settings_for, wait_for

DOCS = ["the cat sat on the mat", "france is in europe", "the capital of france is paris"]
QUERY = "capital of france"
RAW = [-0.5, 0.5, 2.5]  # per document: query words it holds, minus 0.5
NAME = "hash/reranker-tiny"


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


@pytest.fixture(scope="module")
def make(tiny_model_dir: Path, tiny_embedder: Embedder) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def build(scorer: PairScorer | None = None, **overrides: Any) -> TestClient:
        settings = settings_for(tiny_model_dir, **overrides)
        client = ready_client(create_app(settings, tiny_embedder, scorer or FakeScorer()))
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(make: Callable[..., TestClient]) -> TestClient:
    return make(max_client_batch_size=8, rerank_model=NAME)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_v1_rerank_orders_by_relevance_with_top_n_and_documents(client: TestClient) -> None:
    body = {"query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True}
    answer = client.post("/v1/rerank", json=body).json()
    assert answer["model"] == NAME and answer["id"].startswith("rerank-")
    assert [r["index"] for r in answer["results"]] == [2, 1]
    assert [r["relevance_score"] for r in answer["results"]] == pytest.approx([sigmoid(2.5), sigmoid(0.5)])
    assert [r["document"] for r in answer["results"]] == [{"text": DOCS[2]}, {"text": DOCS[1]}]
    usage = answer["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > 3 * len(QUERY.split())

    plain = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()
    assert [r["index"] for r in plain["results"]] == [2, 1, 0]  # every document without top_n
    assert all("document" not in r for r in plain["results"])


def test_v1_rerank_takes_text_objects_and_returns_them_as_sent(client: TestClient) -> None:
    docs = [{"text": DOCS[0], "id": "a"}, DOCS[2]]
    body = {"query": QUERY, "documents": docs, "return_documents": True, "model": NAME}
    results = client.post("/v2/rerank", json=body).json()["results"]
    assert [(r["index"], r["document"]) for r in results] == [(1, {"text": DOCS[2]}), (0, docs[0])]


def test_v2_max_tokens_per_doc_cuts_each_document_before_scoring(client: TestClient) -> None:
    """Cohere v2's max_tokens_per_doc: a document whose query words come late loses them; the
    returned document stays whole."""
    late = "one two three " + QUERY
    body = {"query": QUERY, "documents": [late], "return_documents": True}
    whole = client.post("/v2/rerank", json=body).json()["results"][0]
    cut = client.post("/v2/rerank", json=body | {"max_tokens_per_doc": 3}).json()["results"][0]
    assert cut["relevance_score"] < whole["relevance_score"]
    assert cut["relevance_score"] == pytest.approx(sigmoid(-0.5))  # no query word in the first 3
    assert cut["document"] == {"text": late}
    bad = client.post("/v2/rerank", json=body | {"max_tokens_per_doc": 0})
    assert bad.status_code == 400 and "max_tokens_per_doc" in bad.json()["error"]["message"]


def test_tei_rerank_raw_scores_and_text(client: TestClient) -> None:
    answer = client.post(
        "/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True}
    )
    assert answer.json() == [
        {"index": 2, "score": 2.5, "text": DOCS[2]},
        {"index": 1, "score": 0.5, "text": DOCS[1]},
        {"index": 0, "score": -0.5, "text": DOCS[0]},
    ]
    relevance = client.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    assert [r["score"] for r in relevance] == pytest.approx([sigmoid(2.5), sigmoid(0.5), sigmoid(-0.5)])
    assert all("text" not in r for r in relevance)


def test_tei_truncate_false_refuses_a_long_text_and_true_cuts_it(client: TestClient) -> None:
    long = "paris " * 200  # over the fake's 64-token window
    error = error_of(client.post("/rerank", json={"query": "paris", "texts": [long], "truncate": False}), 400)
    assert error["code"] == "context_length_exceeded" and "window" in error["message"]
    cut = client.post(
        "/rerank", json={"query": "paris", "texts": [long], "truncate": True, "raw_scores": True}
    )
    assert cut.json() == [{"index": 0, "score": 0.5}]
    error = error_of(
        client.post("/rerank", json={"query": "q", "texts": ["d"], "truncate": True, "long_text": "error"}),
        400,
    )
    assert "contradicts" in error["message"] and error["param"] == "truncate"
    error = error_of(
        client.post("/rerank", json={"query": "q", "texts": ["d"], "truncation_direction": "Left"}), 400
    )
    assert error["param"] == "truncation_direction"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"query": QUERY, "texts": []}, 400, "texts"),
        ({"query": QUERY, "texts": ["d"] * 9}, 413, "texts"),
        ({"query": QUERY, "texts": ["ok", ""]}, 400, "texts[1]"),
        ({"texts": ["d"]}, 400, "query"),
    ],
)
def test_bad_tei_input_names_tei_fields(
    client: TestClient, body: dict[str, Any], status: int, param: str
) -> None:
    assert error_of(client.post("/rerank", json=body), status)["param"] == param


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
def test_vllm_score_pairs_in_order(client: TestClient, path: str) -> None:
    answer = client.post(path, json={"model": NAME, "text_1": QUERY, "text_2": DOCS}).json()
    assert answer["object"] == "list" and answer["model"] == NAME and answer["id"].startswith("score-")
    assert [d["index"] for d in answer["data"]] == [0, 1, 2] and {d["object"] for d in answer["data"]} == {
        "score"
    }
    assert [d["score"] for d in answer["data"]] == pytest.approx([sigmoid(x) for x in RAW])
    assert answer["usage"]["prompt_tokens"] > 0
    one = client.post(path, json={"text_1": QUERY, "text_2": DOCS[2]}).json()["data"]
    assert [d["score"] for d in one] == pytest.approx([sigmoid(2.5)])
    zipped = client.post(path, json={"text_1": ["the cat", QUERY], "text_2": [DOCS[0], DOCS[0]]}).json()[
        "data"
    ]
    assert [d["score"] for d in zipped] == pytest.approx([sigmoid(1.5), sigmoid(-0.5)])
    error = error_of(client.post(path, json={"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}), 400)
    assert "text_1 has 2 texts and text_2 3" in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"query": QUERY, "documents": []}, 400, "documents", "documents is empty"),
        ({"query": "", "documents": DOCS}, 400, "query", "query is empty"),
        ({"query": "  ", "documents": DOCS}, 400, "query", "query is empty"),
        ({"documents": DOCS}, 400, "query", "query is required"),
        ({"query": QUERY}, 400, "documents", "documents is required"),
        ({"query": QUERY, "documents": ["ok", 7]}, 400, "documents", "documents[1] is a int"),
        ({"query": QUERY, "documents": [{"title": "x"}]}, 400, "documents", "without a string 'text'"),
        ({"query": QUERY, "documents": ["ok", " "]}, 400, "documents[1]", "documents[1] is empty"),
        ({"query": QUERY, "documents": ["d"] * 9}, 413, "documents", "9 documents; the limit is 8"),
        ({"query": QUERY, "documents": DOCS, "top_n": 0}, 400, "top_n", "top_n"),
        ({"query": QUERY, "documents": DOCS, "rank_fields": ["x"]}, 400, "rank_fields", "Unknown field"),
        ({"query": QUERY, "documents": DOCS, "model": "nope"}, 404, "model", "not served here"),
    ],
)
def test_bad_rerank_input_is_a_4xx_naming_the_field(
    client: TestClient, body: dict[str, Any], status: int, param: str, words: str
) -> None:
    error = error_of(client.post("/v1/rerank", json=body), status)
    assert error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_each_model_kind_is_named_on_its_own_routes(client: TestClient, tiny_embedder: Embedder) -> None:
    embedder_name = tiny_embedder.info.model_id
    error = error_of(
        client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "model": embedder_name}), 400
    )
    assert error["code"] == "wrong_model_kind" and "/v1/embeddings" in error["message"]
    error = error_of(client.post("/v1/embeddings", json={"input": "hi", "model": NAME}), 400)
    assert error["code"] == "wrong_model_kind" and "/v1/rerank" in error["message"]
    assert client.post("/v1/embeddings", json={"input": "hi", "model": embedder_name}).status_code == 200
    assert (
        client.post(
            "/v1/rerank", json={"query": QUERY, "documents": DOCS, "model": "reranker-tiny"}
        ).status_code
        == 200
    )


def test_models_info_and_metrics_describe_both(client: TestClient) -> None:
    cards = client.get("/v1/models").json()["data"]
    assert [(c["id"], c["kind"]) for c in cards][1:] == [(NAME, "rerank")] and cards[0]["kind"] == "embedding"
    info = client.get("/info").json()
    assert info["memory"]["weights_bytes"] > 0  # the tiny embedder's torch weights
    reranker = info["reranker"]
    assert reranker["model"] == NAME and reranker["kind"] == "qwen3-reranker" and reranker["max_length"] == 64
    assert reranker["memory"] == {"weights_bytes": None}  # the fake holds no torch module
    before = metric_samples(client.get("/metrics").text)
    client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    after = metric_samples(client.get("/metrics").text)

    def grew(name: str, labels: tuple[tuple[str, str], ...]) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    model = (("model", NAME),)
    assert grew("qembed_rerank_documents_total", model) == 3
    assert grew("qembed_rerank_prompt_tokens_total", model) > 0
    assert grew("qembed_rerank_batch_pairs_sum", model) == 3
    assert grew("qembed_requests_total", (("route", "/v1/rerank"), ("status", "200"))) == 1
    assert grew("qembed_request_duration_seconds_count", (("route", "/v1/rerank"),)) == 1
    assert after[("qembed_rerank_ready", model)] == 1 and after[("qembed_rerank_queue_tokens", model)] == 0
    roles = {dict(k[1])["role"]: dict(k[1]) for k in after if k[0] == "qembed_model_info"}
    assert roles["reranker"]["model"] == NAME and roles["reranker"]["dimension"] == ""
    assert roles["embedder"]["model"] == cards[0]["id"]


def test_the_schema_documents_the_rerank_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/v1/rerank", "/v2/rerank", "/rerank", "/score", "/v1/score"):
        assert "400" in schema["paths"][path]["post"]["responses"]
    documents = schema["components"]["schemas"]["RerankRequest"]["properties"]["documents"]
    assert documents["maxItems"] == 8 and documents["minItems"] == 1


def test_without_a_reranker_the_routes_say_how_to_start_one(tiny_client: TestClient) -> None:
    for path, body in (("/v1/rerank", {"query": "q", "documents": ["d"]}), ("/rerank", {}), ("/score", {})):
        error = error_of(tiny_client.post(path, json=body), 404)
        assert "--rerank-model" in error["message"] and error["code"] == "reranker_not_served"
    assert "/v1/rerank" not in tiny_client.get("/openapi.json").json()["paths"]
    assert [c["kind"] for c in tiny_client.get("/v1/models").json()["data"]] == ["embedding"]
    assert tiny_client.get("/info").json()["reranker"] is None


def test_rerank_routes_need_the_api_key_and_keep_the_payload_limit(make: Callable[..., TestClient]) -> None:
    client = make(api_key=["sekrit-key"], warmup=False, payload_limit=4096)
    body = {"query": QUERY, "documents": DOCS}
    for path in ("/v1/rerank", "/rerank", "/score"):
        assert error_of(client.post(path, json=body), 401)["code"] == "invalid_api_key"
    key = {"Authorization": "Bearer sekrit-key"}
    assert client.post("/v1/rerank", json=body, headers=key).status_code == 200
    big = {"query": QUERY, "documents": ["word " * 1000]}  # over --payload-limit
    assert error_of(client.post("/v1/rerank", json=big, headers=key), 413)["code"] == "payload_too_large"


def test_ready_waits_for_the_rerankers_warm_up(tiny_model_dir: Path, tiny_embedder: Embedder) -> None:
    gate = threading.Event()
    scorer = FakeScorer(gate=gate)
    app = create_app(settings_for(tiny_model_dir), tiny_embedder, scorer)
    with TestClient(app) as client:
        wait_for(lambda: app.state.service.ready, what="the embedder's warm-up")
        error = error_of(client.get("/ready"), 503)
        assert error["code"] == "not_ready" and "reranker" in error["message"]
        gate.set()
        wait_for(lambda: client.get("/ready").status_code == 200, what="/ready")
        assert scorer.batches and client.get("/health").status_code == 200


def test_queue_full_is_a_429_with_retry_after(make: Callable[..., TestClient]) -> None:
    client = make(max_queued_tokens=40, warmup=False)
    service = client.app.state.rerank_service  # type: ignore[attr-defined]
    service.queue.pause()
    first: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: first.update(
            r=client.post("/v1/rerank", json={"query": "q", "documents": ["a b c"] * 4})
        )
    )
    worker.start()
    wait_for(lambda: service.queue.queued_windows == 4, what="the first request queued")
    refused = client.post("/v1/rerank", json={"query": "q", "documents": ["a b c"] * 4})
    error = error_of(refused, 429)
    assert "--max-queued-tokens" in error["message"] and int(refused.headers["retry-after"]) >= 1
    service.queue.resume()
    worker.join(30)
    assert first["r"].status_code == 200  # the accepted one is served


@pytest.fixture(scope="module")
def live(tiny_model_dir: Path, tiny_embedder: Embedder) -> Iterator[LiveServer]:
    """A real HTTP server with the fake reranker (the SDK and disconnects need a socket)."""
    with LiveServer(
        create_app(settings_for(tiny_model_dir, warmup=False), tiny_embedder, FakeScorer())
    ) as server:
        yield server


def test_the_cohere_sdk_reranks_against_base_url(live: LiveServer) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(base_url=live.url, api_key="EMPTY")
    answer = client.rerank(model=NAME, query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert [r.index for r in answer.results] == [2, 1]
    assert answer.results[0].relevance_score == pytest.approx(sigmoid(2.5))
    assert answer.results[0].document.text == DOCS[2]
    v2 = cohere.ClientV2(base_url=live.url, api_key="EMPTY").rerank(model=NAME, query=QUERY, documents=DOCS)
    assert [r.index for r in v2.results] == [2, 1, 0]
    with pytest.raises(cohere.core.ApiError) as info:
        client.rerank(model=NAME, query=QUERY, documents=[])
    assert info.value.status_code == 400


def test_a_disconnected_clients_pairs_are_not_scored(live: LiveServer) -> None:
    service = live.app.state.rerank_service
    scorer: FakeScorer = service.scorer
    queue = service.queue
    queue.pause()  # the reranker takes nothing: the request waits in its queue
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                live.url + "/v1/rerank",
                json={"query": QUERY, "documents": ["abandoned document"] * 5},
                timeout=httpx.Timeout(5.0, read=0.5),
            )
        wait_for(lambda: queue.cancelled_requests == 1, what="the cancellation")
    finally:
        queue.resume()
    assert queue.dropped_windows == 5 and queue.queued_windows == 0
    batches = list(scorer.batches)
    assert (
        httpx.post(live.url + "/rerank", json={"query": "q", "texts": ["q"]}, timeout=30).status_code == 200
    )
    assert scorer.batches == [*batches, 1]  # only the later request reached the model
    after = live.metrics()
    assert after[("qembed_rerank_dropped_pairs", (("model", NAME),))] == 5
    assert after[("qembed_requests_total", (("route", "/v1/rerank"), ("status", "499")))] == 1


def test_search_with_rerank_true_reorders_by_the_reranker(
    make: Callable[..., TestClient],
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    tiny_embedder: Embedder,
) -> None:
    data = str(tmp_path_factory.mktemp("rerank-index"))
    client = make(index="notes", data_dir=data, warmup=False)
    docs = [{"id": f"d{i}", "text": text} for i, text in enumerate(DOCS)]
    assert client.post("/v1/index", json={"documents": docs}).status_code == 200
    body = {"query": QUERY, "k": 2, "mode": "hybrid", "rerank": True}
    results = client.post("/v1/search", json=body).json()["data"]
    assert [r["doc_id"] for r in results] == ["d2", "d1"]  # the reranker's order, best two
    assert [r["scores"]["rerank"] for r in results] == pytest.approx([sigmoid(2.5), sigmoid(0.5)])
    assert [r["score"] for r in results] == [r["scores"]["rerank"] for r in results]
    plain = client.post("/v1/search", json={**body, "rerank": False}).json()["data"]
    assert all(r["scores"]["rerank"] is None for r in plain)

    settings = settings_for(tiny_model_dir, index="notes", data_dir=data, warmup=False)
    bare = ready_client(create_app(settings, tiny_embedder))  # no reranker
    try:
        error = error_of(bare.post("/v1/search", json=body), 400)
        assert "--rerank-model" in error["message"] and error["param"] == "rerank"
    finally:
        bare.__exit__(None, None, None)


# -- the real Reranker (tiny seeded models of qembed.dev.make_model) behind the routes --------------


@pytest.fixture(scope="module")
def reranker_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from qembed.dev.make_model import make_cross_encoder, make_reranker

    root = tmp_path_factory.mktemp("rerankers")
    return {
        "qwen3": make_reranker(root / "Qwen3-Reranker-tiny", shape="tiny", seed=0),
        "cross": make_cross_encoder(root / "cross-encoder-tiny", shape="tiny", seed=0),
    }


REAL_DOCS = [
    "The capital of China is Beijing.",
    "Gravity pulls things down.",
    "Beijing is a big city in China.",
]


def test_the_served_qwen3_reranker_scores_as_the_python_api(
    make: Callable[..., TestClient], reranker_folders: dict[str, Path]
) -> None:
    from qembed import Reranker

    reranker = Reranker(reranker_folders["qwen3"], device="cpu", dtype="float32")
    client = make(reranker, warmup=True)
    query = "What is the capital of China?"
    alone = reranker.rank(query, REAL_DOCS)
    answer = client.post(
        "/v1/rerank", json={"query": query, "documents": REAL_DOCS, "model": "Qwen3-Reranker-tiny"}
    )
    results = answer.json()["results"]
    assert [r["index"] for r in results] == [r.index for r in alone]
    assert [r["relevance_score"] for r in results] == pytest.approx([r.score for r in alone], abs=1e-5)
    raw = client.post("/rerank", json={"query": query, "texts": REAL_DOCS, "raw_scores": True}).json()
    expected = reranker.score([(query, d) for d in REAL_DOCS], raw=True)
    assert {r["index"]: r["score"] for r in raw} == pytest.approx(
        dict(enumerate(expected.tolist())), abs=1e-5
    )
    info = client.get("/info").json()["reranker"]
    assert info["kind"] == "qwen3-reranker" and info["memory"]["weights_bytes"] > 0
    assert info["default_instruction"] == reranker.info.default_instruction


def test_the_served_cross_encoder_through_vllm_score(
    make: Callable[..., TestClient], reranker_folders: dict[str, Path]
) -> None:
    from qembed import Reranker

    reranker = Reranker(reranker_folders["cross"], device="cpu", dtype="float32")
    client = make(reranker, warmup=True)
    query = "What is the capital of China?"
    data = client.post("/score", json={"text_1": query, "text_2": REAL_DOCS}).json()["data"]
    expected = reranker.score([(query, d) for d in REAL_DOCS])
    assert [d["score"] for d in data] == pytest.approx(expected.tolist(), abs=1e-5)
    error = error_of(
        client.post("/v1/rerank", json={"query": query, "documents": REAL_DOCS, "instruction": "Find code"}),
        400,
    )
    assert error["param"] == "instruction" and "cross-encoder" in error["message"]


@pytest.mark.e2e
def test_qembed_serve_loads_both_models(
    tiny_model_dir: Path, reranker_folders: dict[str, Path], tmp_path: Path
) -> None:
    """`qembed serve --model EMB --rerank-model RR`: one process, both models ready, each on its routes."""
    args = (
        "--model",
        str(tiny_model_dir),
        "--rerank-model",
        str(reranker_folders["qwen3"]),
        "--device",
        "cpu",
    )
    with serve_process(tmp_path / "serve.log", *args) as (_, url):
        models = httpx.get(url + "/v1/models", timeout=10).json()["data"]
        assert [m["kind"] for m in models] == ["embedding", "rerank"]
        body = {"query": "capital of China", "documents": REAL_DOCS, "top_n": 1}
        answer = httpx.post(url + "/v1/rerank", json=body, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["results"]) == 1
        assert httpx.post(url + "/v1/embeddings", json={"input": "hi"}, timeout=60).status_code == 200
        info = httpx.get(url + "/info", timeout=10).json()  # memory per model: each one's weights
        assert info["memory"]["weights_bytes"] > 0 and info["reranker"]["memory"]["weights_bytes"] > 0
    log = (tmp_path / "serve.log").read_text()
    assert "serving reranker" in log and "reranker warm-up" in log


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_rerank_schema_is_what_the_routes_accept(
    tiny_model_dir: Path, tiny_embedder: Embedder, reranker_folders: dict[str, Path], mode: str
) -> None:
    """schemathesis, every check, on the rerank operations of a server with the tiny Qwen3-Reranker:
    schema-valid bodies are answered 200, invalid ones a documented 4xx, never a 5xx. Set aside, as
    in test_openapi_checks_all: a 400 for two fields that contradict each other (TEI's truncate
    against long_text), and vLLM's text_1/text_2 lengths that do not pair (no JSON Schema carries either);
    more documents than --max-client-batch-size are a 413 (as on /v1/embeddings), not a 400."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

    from qembed import Reranker

    from .test_http_edges import Served

    reranker = Reranker(reranker_folders["qwen3"], device="cpu", dtype="float32")

    def accepts_valid_data(ctx: Any, response: Any, case: Any) -> bool | None:
        if response.status_code == 400 and (
            "contradicts" in response.text or "send one text_1" in response.text
        ):
            return None
        return positive_data_acceptance(ctx, response, case)

    def rejects_invalid_data(ctx: Any, response: Any, case: Any) -> bool | None:
        if response.status_code == 413 and "--max-client-batch-size" in response.text:
            return None  # more documents than the limit (maxItems): 413, as /v1/embeddings answers
        return negative_data_rejection(ctx, response, case)

    served = Served(
        create_app(settings_for(tiny_model_dir, max_client_batch_size=8), tiny_embedder, reranker),
        settings_for(tiny_model_dir),
    )
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    with served:
        schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
        paths = {"/v1/rerank", "/v2/rerank", "/rerank", "/score", "/v1/score"}
        ops = [r.ok() for r in schema.get_all_operations() if r.ok().path in paths]
        assert {op.path for op in ops} == paths
        seen: set[int] = set()
        for op in ops:

            @given(case=op.as_strategy(generation_mode=generation))
            @settings(
                max_examples=15,
                deadline=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def run(case: Any) -> None:
                if generation is GenerationMode.POSITIVE:
                    response = case.call_and_validate(
                        timeout=120,
                        excluded_checks=[positive_data_acceptance],
                        additional_checks=[accepts_valid_data],
                    )
                else:
                    response = case.call_and_validate(
                        timeout=120,
                        excluded_checks=[negative_data_rejection],
                        additional_checks=[rejects_invalid_data],
                    )
                seen.add(response.status_code)

            run()
    if mode == "positive":
        assert 200 in seen, seen
    else:
        assert seen and all(400 <= s < 500 for s in seen), seen
