"""Token ids that the served tokenizer would not produce (another tokenizer's, e.g. tiktoken's
from LangChain's OpenAIEmbeddings) are refused with the fix named, instead of silently
giving a garbage vector; --allow-foreign-token-ids embeds them anyway."""

from __future__ import annotations

from pathlib import Path

import pytest

from qembed import Embedder
from qembed.errors import InputError

TEXTS = [
    "A man is playing a flute.",
    "如何解决Kubernetes Pod一直处于Pending状态？",
    "def f(x):\n    return x ** 2",
]


@pytest.mark.parametrize("fixture", ["tiny_embedder", "minilm_embedder"])
def test_own_tokenizations_pass(fixture: str, request: pytest.FixtureRequest) -> None:
    embedder: Embedder = request.getfixturevalue(fixture)
    ids = embedder.tokenizer.content_ids(TEXTS)
    assert all(embedder.tokenizer.is_canonical(x) for x in ids)
    assert all(
        embedder.tokenizer.is_canonical(x) for x in embedder.tokenize(TEXTS)
    )  # /tokenize output, specials included
    assert embedder.encode(ids).shape[0] == len(TEXTS)


def test_byte_ids_are_refused_with_the_fix_named(tiny_embedder: Embedder) -> None:
    """tiktoken-style ids (here: a byte-level encoding) decode to other text under Qwen3's vocabulary."""
    foreign = [list(t.encode("utf-8")) for t in TEXTS]
    with pytest.raises(InputError) as info:
        tiny_embedder.encode(foreign)
    err = info.value
    assert err.code == "foreign_token_ids" and err.param == "input"
    assert err.message.startswith("input[0] ") and "check_embedding_ctx_length=False" in err.message
    assert "--allow-foreign-token-ids" in err.message


def test_qwen3_ids_sent_to_minilm_are_refused(tiny_embedder: Embedder, minilm_embedder: Embedder) -> None:
    qwen_ids = [
        [i for i in ids if i < minilm_embedder.tokenizer.vocab_size]
        for ids in tiny_embedder.tokenizer.content_ids(TEXTS)
    ]
    with pytest.raises(InputError, match="not a tokenization"):
        minilm_embedder.encode(qwen_ids)


def test_the_flag_embeds_them_anyway(tiny_model_dir: Path) -> None:
    permissive = Embedder(str(tiny_model_dir), allow_foreign_token_ids=True)
    assert permissive.encode([list(b"hello")]).shape == (1, permissive.dimension)
