"""The official OpenAI SDK against a real server: every common base_url form, string and
list input, float and base64, dimensions, extra_body prompt_name. Vectors must equal the
in-process Embedder's (the tiny model has random weights: this checks the plumbing, not
quality)."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from qembed import Embedder

TEXTS = ["What is the capital of China?", "Explain gravity", "a", "Ein kurzer deutscher Satz über Berlin."]


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def base_urls(url: str) -> list[str]:
    return [f"{url}/v1", f"{url}/v1/", url, f"{url}/"]


@pytest.fixture(scope="module")
def served_name(live_server) -> str:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="EMPTY").models.list().data[0].id


@pytest.mark.parametrize("form", range(4), ids=["v1", "v1-slash", "root", "root-slash"])
def test_every_base_url_form(live_server, tiny_embedder: Embedder, served_name: str, form: int) -> None:
    client = openai.OpenAI(base_url=base_urls(live_server.url)[form], api_key="EMPTY", max_retries=0)

    single = client.embeddings.create(model=served_name, input=TEXTS[0])
    assert len(single.data) == 1 and single.data[0].index == 0
    assert single.model == served_name
    assert single.usage.prompt_tokens == len(tiny_embedder.tokenize([TEXTS[0]])[0]) > 0
    assert cos(np.array(single.data[0].embedding), tiny_embedder.encode(TEXTS[0]))[0] >= 0.99999

    batch = client.embeddings.create(model=served_name, input=TEXTS, encoding_format="float")
    got = np.array([d.embedding for d in batch.data], dtype=np.float32)
    assert [d.index for d in batch.data] == list(range(len(TEXTS)))
    assert np.all(cos(got, tiny_embedder.encode(TEXTS)) >= 0.99999)
    assert batch.usage.total_tokens == sum(len(ids) for ids in tiny_embedder.tokenize(TEXTS))


def test_base64_decodes_to_the_float_answer(live_server, served_name: str) -> None:
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="EMPTY", max_retries=0)
    floats = client.embeddings.create(model=served_name, input=TEXTS, encoding_format="float")
    b64 = client.embeddings.create(model=served_name, input=TEXTS, encoding_format="base64")
    for f, b in zip(floats.data, b64.data, strict=True):
        raw = b.embedding
        decoded = (
            np.frombuffer(base64.b64decode(raw), dtype="<f4")
            if isinstance(raw, str)
            else np.array(raw, dtype=np.float32)
        )
        np.testing.assert_array_equal(decoded, np.array(f.embedding, dtype=np.float32))
    # Without encoding_format the SDK asks for base64 itself and decodes it.
    default = client.embeddings.create(model=served_name, input=TEXTS)
    np.testing.assert_array_equal(
        np.array([d.embedding for d in default.data], dtype=np.float32),
        np.array([d.embedding for d in floats.data], dtype=np.float32),
    )


def test_dimensions_and_prompt_name(live_server, tiny_embedder: Embedder, served_name: str) -> None:
    client = openai.OpenAI(base_url=live_server.url, api_key="EMPTY", max_retries=0)
    short = client.embeddings.create(model=served_name, input=TEXTS, dimensions=32)
    got = np.array([d.embedding for d in short.data])
    assert got.shape == (len(TEXTS), 32)
    assert np.all(cos(got, tiny_embedder.encode(TEXTS, dimensions=32)) >= 0.99999)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    query = client.embeddings.create(model=served_name, input=TEXTS, extra_body={"prompt_name": "query"})
    with_prompt = np.array([d.embedding for d in query.data])
    assert np.all(cos(with_prompt, tiny_embedder.encode(TEXTS, prompt_name="query")) >= 0.99999)
    # The prompt really changed the vectors (and the token count).
    assert np.all(cos(with_prompt, tiny_embedder.encode(TEXTS)) < 0.9999)
    assert query.usage.prompt_tokens > short.usage.prompt_tokens


def test_token_id_inputs(live_server, tiny_embedder: Embedder, served_name: str) -> None:
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="EMPTY", max_retries=0)
    ids = tiny_embedder.tokenize(TEXTS)  # full model inputs: specials are recognised and kept once
    got = client.embeddings.create(model=served_name, input=ids, encoding_format="float")
    assert np.all(cos(np.array([d.embedding for d in got.data]), tiny_embedder.encode(TEXTS)) >= 0.99999)
    one = client.embeddings.create(model=served_name, input=ids[0], encoding_format="float")
    assert len(one.data) == 1


def test_sdk_errors_are_typed_and_name_the_problem(live_server, served_name: str) -> None:
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert served_name in str(missing.value) and missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model=served_name, input=["ok", ""])
    assert "input[1]" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model=served_name, input="x", dimensions=8)
    assert "dimensions" in str(dims.value) and dims.value.param == "dimensions"
