"""Other servers' routes (routes/compat.py): Ollama's /api/embed, /api/embeddings, /api/tags
(their shapes, and the real ``ollama`` client against a live server), TEI's /decode, vLLM's
/detokenize, /v1/tokenize, /version and ``qembed --version``. Vectors must equal the
in-process Embedder's (the tiny model has random weights: this checks the plumbing)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import qembed
from qembed import Embedder

TEXTS = ["What is the capital of China?", "Explain gravity", "Ein kurzer deutscher Satz über Berlin."]
FOLDER = "Qwen3-Embedding-tiny"  # the tiny fixture's folder: a name of the served model


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- Ollama's shapes (in process) -------------------------------------------------------------------


def test_api_embed_shape(tiny_client, tiny_embedder: Embedder) -> None:
    r = tiny_client.post("/api/embed", json={"model": FOLDER.lower() + ":latest", "input": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    assert body["model"] == FOLDER.lower() + ":latest"  # Ollama echoes the name asked for
    assert body["load_duration"] == 0 and body["total_duration"] > 0
    assert body["prompt_eval_count"] == sum(len(ids) for ids in tiny_embedder.tokenize(TEXTS))
    assert np.all(cos(np.array(body["embeddings"]), tiny_embedder.encode(TEXTS)) >= 0.99999)

    one = tiny_client.post("/api/embed", json={"input": TEXTS[0]}).json()  # a string; no model
    assert len(one["embeddings"]) == 1
    assert cos(np.array(one["embeddings"][0]), tiny_embedder.encode(TEXTS[0]))[0] >= 0.99999


def test_api_embed_dimensions_and_qembed_options(tiny_client, tiny_embedder: Embedder) -> None:
    dim = tiny_embedder.info.min_dimensions
    r = tiny_client.post(
        "/api/embed",
        json={"input": TEXTS, "dimensions": dim, "options": {"num_ctx": 512}, "keep_alive": "5m"},
    )
    assert r.status_code == 200, r.text
    got = np.array(r.json()["embeddings"])
    assert got.shape == (len(TEXTS), dim)
    assert np.all(cos(got, tiny_embedder.encode(TEXTS, dimensions=dim)) >= 0.99999)
    names = list(tiny_embedder.prompts)
    if names:  # qembed's own options are taken too
        r = tiny_client.post("/api/embed", json={"input": TEXTS, "prompt_name": names[0]})
        want = tiny_embedder.encode(TEXTS, prompt_name=names[0])
        assert np.all(cos(np.array(r.json()["embeddings"]), want) >= 0.99999)


def test_api_embed_empty_input_is_the_loading_call(tiny_client) -> None:
    for empty in ("", []):
        r = tiny_client.post("/api/embed", json={"model": FOLDER, "input": empty})
        assert r.status_code == 200, r.text
        assert r.json()["embeddings"] == []
    assert tiny_client.post("/api/embeddings", json={"model": FOLDER}).json() == {"embedding": []}


def test_api_embed_truncate(make_client, short_embedder: Embedder) -> None:
    client = make_client(embedder=short_embedder)
    long = "word " * 200  # well over the 64-token window
    cut = client.post("/api/embed", json={"input": [long]})  # truncate defaults to true
    assert cut.status_code == 200, cut.text
    assert (
        cos(np.array(cut.json()["embeddings"][0]), short_embedder.encode(long, long_text="truncate"))[0]
        >= 0.99999
    )
    assert cut.json()["prompt_eval_count"] == 64
    refused = client.post("/api/embed", json={"input": [long], "truncate": False})
    assert refused.status_code == 400
    assert set(refused.json()) == {"error"} and "64" in refused.json()["error"]
    chunked = client.post(
        "/api/embed", json={"input": [long], "long_text": "chunk"}
    )  # qembed's option instead of the default
    assert chunked.status_code == 200
    assert (
        cos(np.array(chunked.json()["embeddings"][0]), short_embedder.encode(long, long_text="chunk"))[0]
        >= 0.99999
    )


def test_api_errors_have_ollamas_shape(tiny_client) -> None:
    cases = [
        ({"model": "nomic-embed-text:latest", "input": "x"}, 404, "'nomic-embed-text:latest' is not served"),
        ({"model": FOLDER + ":latest:v2", "input": "x"}, 404, f"'{FOLDER}:latest:v2' is not served"),
        ({"input": 3}, 400, "input"),
        ({"input": ["a", ""]}, 400, "input[1]"),
        ({"input": "x", "truncate": "yes"}, 400, "truncate"),
        ({"input": "x", "tokens": 3}, 400, "tokens"),
    ]
    for body, status, words in cases:
        r = tiny_client.post("/api/embed", json=body)
        assert r.status_code == status, (body, r.text)
        assert set(r.json()) == {"error"} and words in r.json()["error"], (body, r.text)
    r = tiny_client.post("/api/embeddings", content=b"{not json")
    assert r.status_code == 400 and set(r.json()) == {"error"}
    r = tiny_client.post("/api/embeddings", json={"model": "other", "prompt": "x"})
    assert r.status_code == 404 and set(r.json()) == {"error"}
    # qembed's own routes keep OpenAI's body
    assert (
        "message" in tiny_client.post("/v1/embeddings", json={"model": "other", "input": "x"}).json()["error"]
    )


def test_api_embeddings_legacy(tiny_client, tiny_embedder: Embedder) -> None:
    r = tiny_client.post("/api/embeddings", json={"model": FOLDER + ":latest", "prompt": TEXTS[1]})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"embedding"}
    # `prompt` is the text here, not qembed's prompt prefix
    assert cos(np.array(r.json()["embedding"]), tiny_embedder.encode(TEXTS[1]))[0] >= 0.99999


def test_api_tags_and_version(tiny_client, tiny_embedder: Embedder) -> None:
    r = tiny_client.get("/api/tags")
    assert r.status_code == 200, r.text
    (card,) = r.json()["models"]
    served = tiny_client.get("/v1/models").json()["data"][0]["id"]
    assert card["name"] == card["model"] == served + ":latest"
    assert card["size"] > 0 and len(card["digest"]) == 64
    assert card["modified_at"].endswith("Z")
    assert card["details"]["format"] == tiny_embedder.info.backend
    assert card["details"]["family"] == tiny_embedder.info.model_type
    # the listed name is accepted back
    assert tiny_client.post("/api/embed", json={"model": card["name"], "input": "x"}).status_code == 200
    assert tiny_client.get("/api/version").json() == {"version": qembed.__version__}


def test_api_routes_need_the_key(make_client) -> None:
    client = make_client(api_key=["sekrit"])
    for method, path in [
        ("POST", "/api/embed"),
        ("POST", "/api/embeddings"),
        ("GET", "/api/tags"),
        ("POST", "/decode"),
        ("POST", "/detokenize"),
        ("POST", "/v1/tokenize"),
    ]:
        assert client.request(method, path, json={"input": "x"}).status_code == 401, path
    headers = {"Authorization": "Bearer sekrit"}
    assert client.post("/api/embed", json={"input": "x"}, headers=headers).status_code == 200
    assert client.get("/version").status_code == 200  # open, as /info is
    assert client.get("/api/version").status_code == 200


# -- TEI's /decode, vLLM's /detokenize, /v1/tokenize, /version -------------------------------------------


def test_decode_round_trips_tokenize(tiny_client, tiny_embedder: Embedder) -> None:
    tokens = tiny_client.post("/tokenize", json={"input": TEXTS}).json()["data"]
    ids = [d["tokens"] for d in tokens]
    batch = tiny_client.post("/decode", json={"ids": ids})
    assert batch.status_code == 200, batch.text
    assert batch.json() == TEXTS  # special tokens skipped by default
    single = tiny_client.post("/decode", json={"ids": ids[0]})
    assert single.json() == [TEXTS[0]]
    kept = tiny_client.post("/decode", json={"ids": ids[0], "skip_special_tokens": False}).json()[0]
    assert TEXTS[0] in kept
    assert kept == tiny_embedder.tokenizer.decode(ids[0])
    if tiny_embedder.tokenizer.special.count:
        assert kept != TEXTS[0]


def test_decode_errors(make_client, tiny_client, tiny_embedder: Embedder) -> None:
    vocab = tiny_embedder.tokenizer.vocab_size
    r = tiny_client.post("/decode", json={"ids": [[1, 2], [3, vocab]]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input"
    assert f"ids[1] has token id {vocab}" in r.json()["error"]["message"]
    for body in ({"ids": []}, {"ids": "text"}, {"ids": [1.5]}, {"idz": [1]}):
        r = tiny_client.post("/decode", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", (body, r.text)
    small = make_client(max_client_batch_size=2)
    r = small.post("/decode", json={"ids": [[1], [2], [3]]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_inputs"


def test_detokenize(tiny_client, tiny_embedder: Embedder) -> None:
    ids = tiny_embedder.tokenize([TEXTS[0]])[0]
    r = tiny_client.post("/detokenize", json={"model": FOLDER, "tokens": ids})
    assert r.status_code == 200, r.text
    assert r.json() == {"prompt": tiny_embedder.tokenizer.decode(ids)}
    assert TEXTS[0] in r.json()["prompt"]
    assert tiny_client.post("/detokenize", json={"tokens": []}).json() == {"prompt": ""}
    r = tiny_client.post("/detokenize", json={"model": "other", "tokens": ids})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_v1_tokenize_is_tokenize(tiny_client) -> None:
    body = {"input": TEXTS, "prompt": "Query: "}
    a, b = tiny_client.post("/tokenize", json=body), tiny_client.post("/v1/tokenize", json=body)
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()


def test_version(tiny_client, tiny_embedder: Embedder) -> None:
    body = tiny_client.get("/version").json()
    assert body["version"] == qembed.__version__
    assert body["model"] == FOLDER  # a local folder: its name only, as /info shows it
    assert body["backend"] == tiny_embedder.info.backend and body["device"] == tiny_embedder.info.device


def test_openapi_lists_the_routes(tiny_client) -> None:
    paths = tiny_client.get("/openapi.json").json()["paths"]
    for path, method in [
        ("/api/embed", "post"),
        ("/api/embeddings", "post"),
        ("/api/tags", "get"),
        ("/decode", "post"),
        ("/detokenize", "post"),
        ("/v1/tokenize", "post"),
        ("/version", "get"),
        ("/api/version", "get"),
    ]:
        op = paths[path][method]
        assert op["tags"] == ["compatibility"] and op["summary"], path
    assert (
        "truncate"
        in paths["/api/embed"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )


def test_cli_version() -> None:
    from qembed.cli.main import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"qembed {qembed.__version__}"
    out = subprocess.run(
        [sys.executable, "-c", "from qembed.cli.main import app; app()", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and qembed.__version__ in out.stdout


# -- the real ollama client -----------------------------------------------------------------------------


def test_ollama_client(live_server, tiny_embedder: Embedder) -> None:
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=live_server.url)

    listed = client.list()
    (model,) = listed.models
    assert model.model.endswith(":latest") and model.size and model.size > 0
    assert model.details is not None and model.details.family == tiny_embedder.info.model_type

    for name in (model.model, FOLDER, FOLDER.lower() + ":latest", FOLDER + ":0.6b"):
        got = client.embed(model=name, input=TEXTS)
        vectors = np.array(got.embeddings)
        assert vectors.shape == (len(TEXTS), tiny_embedder.dimension)
        assert np.all(cos(vectors, tiny_embedder.encode(TEXTS)) >= 0.99999), name
        assert got.prompt_eval_count == sum(len(ids) for ids in tiny_embedder.tokenize(TEXTS))
    one = client.embed(model=FOLDER, input=TEXTS[0])
    assert cos(np.array(one.embeddings[0]), tiny_embedder.encode(TEXTS[0]))[0] >= 0.99999

    legacy = client.embeddings(model=model.model, prompt=TEXTS[2])
    assert cos(np.array(legacy.embedding), tiny_embedder.encode(TEXTS[2]))[0] >= 0.99999

    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="nomic-embed-text:latest", input=["x"])
    assert err.value.status_code == 404 and "nomic-embed-text" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.embeddings(model="nomic-embed-text", prompt="x")
    assert err.value.status_code == 404
