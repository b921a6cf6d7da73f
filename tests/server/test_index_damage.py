"""`qembed serve --index` on a damaged index (issue #13): the process stays up, `/ready` and
`/v1/search` answer 503 `index_damaged` naming the index and `--rebuild`, and they recover
when the file is restored; `POST /v1/index` waits for another writer, then names it."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from qembed.server.app import create_app
from tests.server.conftest import LiveServer, settings_for

DOCS = [
    {"id": "a", "text": "Beijing is the capital of China."},
    {"id": "b", "text": "Gravity pulls things down."},
]


def _assert_damaged(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "index_damaged" and err["type"] == "server_error"
    assert "index 'notes' is damaged" in err["message"] and "--rebuild" in err["message"]


def test_truncated_vector_file_under_a_running_server(
    tiny_model_dir: Path, tiny_embedder, tmp_path: Path
) -> None:
    app = create_app(settings_for(tiny_model_dir, index="notes", data_dir=str(tmp_path)), tiny_embedder)
    with LiveServer(app) as server:
        url = server.url
        assert httpx.post(url + "/v1/index", json={"documents": DOCS}, timeout=60).status_code == 200
        assert (
            httpx.post(url + "/v1/search", json={"query": "capital", "k": 2}, timeout=60).status_code == 200
        )
        (path,) = (tmp_path / "notes").glob("vectors-*.f32")
        original = path.read_bytes()
        os.truncate(path, len(original) // 2)

        _assert_damaged(httpx.get(url + "/ready", timeout=30))  # old: 200
        for mode in ("dense", "hybrid", "bm25"):
            _assert_damaged(
                httpx.post(url + "/v1/search", json={"query": "capital", "k": 2, "mode": mode}, timeout=60)
            )
        _assert_damaged(
            httpx.post(url + "/v1/index", json={"documents": DOCS}, timeout=60)
        )  # unchanged documents too
        assert httpx.get(url + "/health", timeout=30).status_code == 200  # the process is up (old: SIGBUS)
        assert server.thread.is_alive()
        kinds = server.metrics()
        assert kinds[("qembed_errors_total", (("kind", "index_damaged"),))] >= 3

        path.write_bytes(original)  # restored: ready again, search answers
        assert httpx.get(url + "/ready", timeout=30).status_code == 200
        r = httpx.post(url + "/v1/search", json={"query": "capital", "k": 2}, timeout=60)
        assert r.status_code == 200 and len(r.json()["data"]) == 2


def test_index_request_waits_for_another_writer_then_names_it(
    tiny_model_dir: Path, tiny_embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qembed.search.store.lock import WriterLock
    from qembed.server.routes import search as search_routes

    monkeypatch.setattr(search_routes, "WRITER_WAIT", 0.5)
    app = create_app(settings_for(tiny_model_dir, index="notes", data_dir=str(tmp_path)), tiny_embedder)
    with LiveServer(app) as server:
        other = WriterLock(
            tmp_path / "notes", "notes"
        )  # its own lock file handle: conflicts like another process
        with other.hold(5, "qembed index docs/ (test)"):
            r = httpx.post(server.url + "/v1/index", json={"documents": DOCS}, timeout=60)
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "index_busy"
            assert f"pid {os.getpid()}" in err["message"] and "qembed index docs/ (test)" in err["message"]
        r = httpx.post(server.url + "/v1/index", json={"documents": DOCS}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["documents"] == 2


def test_server_started_on_a_corrupt_index_stays_up_and_answers_503(
    tiny_model_dir: Path, tiny_embedder, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from qembed.search.store.embedded import EmbeddedStore
    from tests.server.conftest import wait_for

    EmbeddedStore(tmp_path / "notes", "notes").close()
    db = tmp_path / "notes" / "index.sqlite"
    db.write_bytes(b"this is no SQLite file" * 100)
    app = create_app(
        settings_for(tiny_model_dir, index="notes", data_dir=str(tmp_path)), tiny_embedder
    )  # old: raised
    with TestClient(app) as client:
        wait_for(
            lambda: client.get("/ready").json().get("error", {}).get("code") != "not_ready", what="warm-up"
        )
        _assert_damaged(client.get("/ready"))
        _assert_damaged(client.post("/v1/search", json={"query": "x"}))
        _assert_damaged(client.post("/v1/index", json={"documents": DOCS}))
        assert client.post("/v1/embeddings", json={"input": "still serving"}).status_code == 200
