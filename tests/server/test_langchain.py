"""LangChain's OpenAIEmbeddings against qembed serve, with the real langchain-openai package.

With its defaults it tokenizes with tiktoken and sends token ids: qembed answers 400 naming
the fix instead of embedding another tokenizer's ids as its own (garbage vectors with 200
OK). tiktoken's encoding files cannot be downloaded here, so tiktoken's *data* is a test
double (a byte-level encoding); LangChain's own code path is the real one."""

from __future__ import annotations

import numpy as np
import pytest

from qembed.server.app import create_app
from tests.server.conftest import LiveServer, settings_for

langchain_openai = pytest.importorskip("langchain_openai")
tiktoken = pytest.importorskip("tiktoken")
openai = pytest.importorskip("openai")

TEXTS = ["A man is playing a flute.", "The cat sits on the mat."]


@pytest.fixture
def byte_tiktoken(monkeypatch: pytest.MonkeyPatch):
    encoding = tiktoken.Encoding(
        name="bytes-test-double",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda *_a, **_k: encoding)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda *_a, **_k: encoding)
    return encoding


@pytest.fixture(scope="module")
def minilm_server(minilm_embedder):
    from pathlib import Path

    with LiveServer(create_app(settings_for(Path(minilm_embedder.info.path)), minilm_embedder)) as server:
        yield server


def test_langchain_defaults_get_a_400_that_names_the_fix(minilm_server, byte_tiktoken) -> None:
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="all-MiniLM-L6-v2", base_url=minilm_server.url + "/v1", api_key="EMPTY", max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as info:
        embeddings.embed_documents(TEXTS)
    assert "check_embedding_ctx_length=False" in str(info.value)


def test_langchain_sending_text_gets_the_right_vectors(minilm_server, minilm_embedder) -> None:
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="all-MiniLM-L6-v2",
        base_url=minilm_server.url + "/v1",
        api_key="EMPTY",
        check_embedding_ctx_length=False,
    )
    got = np.array(embeddings.embed_documents(TEXTS), dtype=np.float32)
    want = minilm_embedder.encode(TEXTS)
    assert (np.sum(got * want, axis=1) >= 0.99999).all()
