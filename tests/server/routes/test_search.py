"""POST /v1/search and /v1/index: on a bare FastAPI app with an in-process embed, and through
the real server app (``create_app`` with ``Settings(index=...)``); HTTP results equal the
Python API's."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from qembed.embedding.embedder import EncodeResult
from qembed.server.routes.search import make_router
from qembed.settings import Settings
from tests.search.conftest import TARGET

TARGET_PATH = TARGET.removeprefix("docs/")


def _fake_embed(embedder):
    calls: list[tuple[int, dict]] = []

    async def embed(inputs, **options):
        calls.append((len(inputs), options))
        return EncodeResult(embedder.encode(inputs, **options), 0)

    embed.calls = calls  # type: ignore[attr-defined]
    return embed


def _app(settings: Settings, embed, embedder) -> FastAPI:
    from qembed.server import errors

    app = FastAPI()
    errors.install(app)
    app.include_router(make_router(settings=settings, embed=embed, embedder=embedder))
    return app


@pytest.fixture(scope="module")
def k8s_client(k8s_index, minilm_embedder):
    _, _, data, _ = k8s_index
    embed = _fake_embed(minilm_embedder)
    app = _app(Settings(index="k8s", data_dir=str(data), model="minilm"), embed, minilm_embedder)
    with TestClient(app) as client:
        yield client, embed


@pytest.mark.parametrize("mode", ["dense", "hybrid", "bm25"])
def test_http_search_equals_in_process_search(k8s_index, k8s_client, mode) -> None:
    idx, _, _, _ = k8s_index
    client, embed = k8s_client
    body = {"query": "my pod stays pending", "k": 5, "mode": mode, "filters": {"path_prefix": "tasks/"}}
    r = client.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    expected = idx.search("my pod stays pending", k=5, mode=mode, path_prefix="tasks/")
    assert [d["id"] for d in data["data"]] == [e.chunk.chunk_id for e in expected]
    assert [d["score"] for d in data["data"]] == pytest.approx([e.score for e in expected], abs=1e-5)
    assert data["data"][0]["path"] == TARGET_PATH and data["index"] == "k8s" and data["mode"] == mode
    if mode != "bm25":
        assert embed.calls[-1][1] == {"task": "retrieval", "input_type": "query"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "mode": "fuzzy"}, "mode"),
        ({"k": 3}, "query"),
        ({"query": ""}, "query"),
        ({"query": "x", "filters": {"colour": "red"}}, "filters.colour"),
    ],
)
def test_http_search_bad_input_is_an_openai_400(k8s_client, body, param) -> None:
    client, _ = k8s_client
    r = client.post("/v1/search", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_http_index_adds_replaces_and_reports(tmp_path, minilm_embedder) -> None:
    embed = _fake_embed(minilm_embedder)
    app = _app(Settings(index="api", data_dir=str(tmp_path), model="minilm"), embed, minilm_embedder)
    docs = [
        {
            "id": "kb/1",
            "text": "# Reset password\n\nOpen settings and choose reset password.",
            "metadata": {"path": "kb/reset.md", "team": "it"},
        },
        {
            "id": "kb/2",
            "text": "def rotate_keys():\n    return vault.rotate()\n",
            "metadata": {"path": "src/keys.py"},
        },
    ]
    with TestClient(app) as client:
        r = client.post("/v1/index", json={"documents": docs})
        assert r.status_code == 200, r.text
        rep = r.json()
        assert (rep["documents_added"], rep["chunks_embedded"], rep["documents"], rep["chunks"]) == (
            2,
            2,
            2,
            2,
        )
        assert embed.calls[-1][1] == {"task": "retrieval", "input_type": "document"}

        again = client.post("/v1/index", json={"documents": docs}).json()
        assert (again["documents_unchanged"], again["chunks_embedded"]) == (2, 0)

        hit = client.post("/v1/search", json={"query": "how do I reset my password", "k": 1}).json()["data"][
            0
        ]
        assert hit["doc_id"] == "kb/1" and hit["path"] == "kb/reset.md" and hit["metadata"]["team"] == "it"
        code = client.post(
            "/v1/search",
            json={"query": "rotate_keys", "k": 5, "mode": "hybrid", "filters": {"language": "python"}},
        ).json()["data"]
        assert [h["doc_id"] for h in code] == ["kb/2"]

        docs[0]["text"] = "# Printer\n\nThe printer on floor 2 needs toner."
        replaced = client.post("/v1/index", json={"documents": docs[:1]}).json()
        assert (replaced["documents_updated"], replaced["chunks_embedded"], replaced["chunks"]) == (1, 1, 2)
        hits = client.post("/v1/search", json={"query": "reset password", "k": 5, "mode": "bm25"}).json()[
            "data"
        ]
        assert all("password" not in h["text"] for h in hits)

        stats = client.get("/v1/index").json()
        assert stats["documents"] == 2 and stats["dimension"] == 384 and stats["meta"]["model"] == "minilm"

        dup = client.post("/v1/index", json={"documents": [docs[0], docs[0]]})
        assert dup.status_code == 400 and dup.json()["error"]["param"] == "documents[1].id"
        empty = client.post("/v1/index", json={"documents": []})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "documents"


def test_real_server_serves_the_index_with_auth(k8s_index, minilm_embedder) -> None:
    """``qembed serve --index k8s``: the server app includes the router behind its API key."""
    from qembed.server.app import create_app

    idx, _, data, _ = k8s_index
    settings = Settings(index="k8s", data_dir=str(data), model="minilm", api_key="s3cret-key", warmup=False)
    app = create_app(settings, minilm_embedder)
    with TestClient(app) as client:
        body = {"query": "my pod stays pending", "k": 5, "mode": "hybrid"}
        denied = client.post("/v1/search", json=body)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        r = client.post("/v1/search", json=body, headers={"Authorization": "Bearer s3cret-key"})
        assert r.status_code == 200, r.text
        expected = idx.search("my pod stays pending", k=5, mode="hybrid")
        got = r.json()["data"]
        assert [d["id"] for d in got] == [e.chunk.chunk_id for e in expected]
        assert [d["score"] for d in got] == pytest.approx([e.score for e in expected], abs=1e-5)
