"""The public API, Embedder(...).encode(...): batch invariance, Matryoshka dimensions, long
inputs, token-id inputs, usage counts and the model's facts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qembed import Embedder, similarity
from qembed.errors import InputError, InputTooLong

MIN_COS = 0.99999
TEXTS = [
    "a",
    "Hello world",
    "北京是中华人民共和国的首都。",
    "def add(a, b):\n    return a + b\n",
    " ".join(["Long inputs are padded together with short ones in one batch."] * 8),
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def small(tiny_model_dir: Path) -> Embedder:
    """The tiny model with a 32-token window, so that long inputs are cheap."""
    return Embedder(str(tiny_model_dir), max_tokens=32, chunk_overlap=4)


# -- shapes and facts --------------------------------------------------------------------------
def test_encode_shapes_and_unit_norm(tiny_embedder: Embedder) -> None:
    one = tiny_embedder.encode("Hello world")
    many = tiny_embedder.encode(TEXTS)
    assert one.shape == (64,) and many.shape == (len(TEXTS), 64)
    assert one.dtype == many.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1, atol=1e-5)
    assert _cos(one, many[1]) >= MIN_COS


def test_model_facts(tiny_embedder: Embedder, tiny_model_dir: Path) -> None:
    info = tiny_embedder.info
    assert info.dimension == tiny_embedder.dimension == 64
    assert info.max_tokens == 8192 and info.pooling == "lasttoken" and info.normalize
    assert info.supports_mrl and info.min_dimensions == 32 and info.model_type == "qwen3"
    assert info.model_id == tiny_model_dir.name and info.source == "local" and info.fallback_reason is None
    assert set(tiny_embedder.prompts) == {"query", "document"}
    assert tiny_embedder.prompts["query"].startswith("Instruct: ")
    assert "Embedder(" in repr(tiny_embedder)


def test_usage_counts_every_token_the_model_reads(tiny_embedder: Embedder, small: Embedder) -> None:
    result = tiny_embedder.encode_with_usage(TEXTS)
    assert result.prompt_tokens == sum(len(ids) for ids in tiny_embedder.tokenize(TEXTS))
    prompted = tiny_embedder.encode_with_usage(["Hello world"], prompt_name="query")
    assert prompted.prompt_tokens == len(tiny_embedder.tokenize("Hello world", prompt_name="query")[0])
    long = " ".join(f"word{i}" for i in range(60))
    windows = small.prepare(long).windows
    assert small.encode_with_usage(long).prompt_tokens == sum(len(w.ids) for w in windows)


def test_similarity(tiny_embedder: Embedder) -> None:
    a = tiny_embedder.encode(TEXTS[:2])
    b = tiny_embedder.encode(TEXTS[1:])
    sims = similarity(a, b)
    assert sims.shape == (2, len(TEXTS) - 1)
    assert sims[1, 0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(tiny_embedder.similarity(a, b), sims)
    np.testing.assert_allclose(similarity(a[0], a[0]), [[1.0]], atol=1e-5)


# -- batch invariance -------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny_embedder", "minilm_embedder"])
def test_batch_invariance_mixed_lengths(request: pytest.FixtureRequest, fixture: str) -> None:
    embedder: Embedder = request.getfixturevalue(fixture)
    alone = np.stack([embedder.encode(t) for t in TEXTS])
    for kwargs in (
        {"batch_size": 1},
        {"batch_size": 2},
        {"batch_size": 64},
        {"batch_size": 64, "max_batch_tokens": 40},
    ):
        batched = embedder.encode(TEXTS, **kwargs)
        assert _cos(batched, alone).min() >= MIN_COS, kwargs
    # Through run() directly: one padded batch holding every length at once.
    prepared = embedder.prepare(TEXTS)
    one_batch = embedder.finish(prepared, embedder.run(prepared.windows))
    assert _cos(one_batch, alone).min() >= MIN_COS
    reverse = embedder.encode(TEXTS[::-1], batch_size=64)[::-1]
    assert _cos(reverse, alone).min() >= MIN_COS


def test_batch_invariance_equal_lengths(tiny_embedder: Embedder) -> None:
    texts = ["The cat sat on the mat.", "The dog sat on the rug.", "A bird sat on the box."]
    lengths = {len(ids) for ids in tiny_embedder.tokenize(texts)}
    assert len(lengths) == 1, "the texts must tokenize to the same length (no padding at all)"
    alone = np.stack([tiny_embedder.encode(t) for t in texts])
    together = tiny_embedder.encode(texts, batch_size=len(texts))
    assert _cos(together, alone).min() >= MIN_COS
    assert _cos(together[0], together[1]) < 0.999  # and they are different texts


def test_duplicates_in_a_batch(tiny_embedder: Embedder) -> None:
    out = tiny_embedder.encode(["Hello world", "a much longer text than the other one is", "Hello world"])
    assert _cos(out[0], out[2]) >= MIN_COS


# -- Matryoshka dimensions -------------------------------------------------------------------
def test_dimensions_are_the_prefix_renormalized(tiny_embedder: Embedder) -> None:
    full = tiny_embedder.encode(TEXTS)
    for dims in (32, 48):
        cut = tiny_embedder.encode(TEXTS, dimensions=dims)
        assert cut.shape == (len(TEXTS), dims)
        expected = full[:, :dims] / np.linalg.norm(full[:, :dims], axis=1, keepdims=True)
        np.testing.assert_allclose(cut, expected, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(tiny_embedder.encode(TEXTS, dimensions=64), full, atol=1e-7)


@pytest.mark.parametrize("bad", [31, 65, 0, -1, "x", True, 32.0])
def test_dimensions_out_of_range(tiny_embedder: Embedder, bad: object) -> None:
    with pytest.raises(InputError) as info:
        tiny_embedder.encode("Hello", dimensions=bad)
    assert info.value.param == "dimensions" and "dimensions" in info.value.message


def test_dimensions_error_names_the_range(tiny_embedder: Embedder) -> None:
    with pytest.raises(InputError, match="between 32 and 64"):
        tiny_embedder.encode("Hello", dimensions=16)


def test_model_without_mrl_refuses_smaller_dimensions_unless_forced(minilm_embedder: Embedder) -> None:
    with pytest.raises(InputError) as info:
        minilm_embedder.encode("Hello", dimensions=128)
    assert info.value.param == "dimensions" and "force" in info.value.message.lower()
    assert minilm_embedder.encode("Hello", dimensions=384).shape == (384,)
    forced = Embedder("minilm", force_dimensions=True)
    cut = forced.encode("Hello", dimensions=128)
    full = forced.encode("Hello")
    assert cut.shape == (128,)
    np.testing.assert_allclose(cut, full[:128] / np.linalg.norm(full[:128]), atol=1e-6)


# -- long inputs -------------------------------------------------------------------------------
LONG = " ".join(f"token{i} is here" for i in range(16))  # 71 tokens: three 32-token windows


def test_chunk_is_the_token_weighted_mean_of_its_windows(small: Embedder) -> None:
    prepared = small.prepare(LONG)
    windows = prepared.windows
    assert len(windows) == 3
    assert all(len(w.ids) <= 32 and w.ids[-1] == 151643 for w in windows)
    full = small.tokenize(LONG)[0][:-1]
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.ids[:-1][-4:] == b.ids[:4]  # chunk_overlap=4
    assert windows[0].ids[:-1] == full[:31] and windows[-1].ids[:-1] == full[-len(windows[-1].ids) + 1 :]
    # Each window embedded on its own, normalized, weighted by its tokens, averaged, normalized.
    vectors = np.stack([small.run([w])[0] for w in windows]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    weights = np.array([w.weight for w in windows], dtype=np.float64)
    expected = (weights[:, None] * vectors).sum(0) / weights.sum()
    expected /= np.linalg.norm(expected)
    ours = small.encode(LONG)
    assert _cos(ours, expected) >= MIN_COS
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    # A chunked input inside a batch with short ones gives the same vector.
    batch = small.encode(["short one", LONG, "another"], batch_size=2)
    assert _cos(batch[1], ours) >= MIN_COS


def test_chunk_windows_repeat_the_prompt(small: Embedder) -> None:
    prompt = small.tokenizer.prompt_ids("Instruct: Find it\nQuery:")
    windows = small.prepare(LONG, instruction="Find it").windows
    assert len(windows) > 3
    assert all(tuple(w.ids[: len(prompt)]) == prompt for w in windows)


def test_truncate_right_keeps_prompt_and_first_tokens(small: Embedder) -> None:
    full = small.tokenize(LONG, prompt_name="query")[0]
    prompt = list(small.tokenizer.prompt_ids(small.prompts["query"]))
    content = full[len(prompt) : -1]
    [window] = small.prepare(LONG, prompt_name="query", long_text="truncate").windows
    room = 32 - 1 - len(prompt)
    assert window.ids == prompt + content[:room] + [151643]
    vector = small.encode(LONG, prompt_name="query", long_text="truncate")
    assert _cos(vector, small.encode([window.ids])[0]) >= MIN_COS


def test_truncate_left_keeps_prompt_and_last_tokens(small: Embedder) -> None:
    full = small.tokenize(LONG, prompt_name="query")[0]
    prompt = list(small.tokenizer.prompt_ids(small.prompts["query"]))
    content = full[len(prompt) : -1]
    [window] = small.prepare(LONG, prompt_name="query", long_text="truncate", truncation_side="left").windows
    room = 32 - 1 - len(prompt)
    assert window.ids == prompt + content[-room:] + [151643]


def test_truncate_keeps_the_prompt_even_when_it_merges_with_the_text(small: Embedder) -> None:
    """'Query:' followed by '(' tokenizes differently together; windows still carry the whole prompt."""
    text = "(" + LONG
    prompt = list(small.tokenizer.prompt_ids(small.prompts["query"]))
    for side in ("right", "left"):
        [window] = small.prepare(
            text, prompt_name="query", long_text="truncate", truncation_side=side
        ).windows
        assert window.ids[: len(prompt)] == prompt, side
    for window in small.prepare(text, prompt_name="query").windows:
        assert window.ids[: len(prompt)] == prompt


def test_error_policy_has_the_token_count_and_the_limit(small: Embedder) -> None:
    count = len(small.tokenize(LONG)[0])
    with pytest.raises(InputTooLong) as info:
        small.encode(["fine", LONG], long_text="error")
    message = info.value.message
    assert f"{count} tokens" in message and "32" in message and "input[1]" in message


def test_policy_from_settings(tiny_model_dir: Path) -> None:
    strict = Embedder(str(tiny_model_dir), max_tokens=32, long_text="error")
    with pytest.raises(InputTooLong):
        strict.encode(LONG)
    assert strict.encode(LONG, long_text="truncate").shape == (64,)


def test_prompt_longer_than_the_window_is_a_clear_error(small: Embedder) -> None:
    instruction = " ".join(["very long instruction"] * 20)
    for policy in ("chunk", "truncate"):
        with pytest.raises(InputError, match="prompt alone takes"):
            small.encode("short text", instruction=instruction, long_text=policy)


@pytest.mark.parametrize(("option", "value"), [("long_text", "split"), ("truncation_side", "middle")])
def test_bad_long_text_options(small: Embedder, option: str, value: str) -> None:
    with pytest.raises(InputError) as info:
        small.encode(LONG, **{option: value})
    assert info.value.param == option


def test_default_window_and_overlap(tiny_embedder: Embedder, minilm_embedder: Embedder) -> None:
    assert tiny_embedder.max_tokens == 8192 and tiny_embedder.chunk_overlap == 1024
    assert minilm_embedder.max_tokens == 256


def test_minilm_long_input_is_chunked(minilm_embedder: Embedder) -> None:
    text = " ".join(["semantic search over long documents"] * 80)  # > 256 tokens
    windows = minilm_embedder.prepare(text).windows
    assert len(windows) >= 2
    assert all(w.ids[0] == 101 and w.ids[-1] == 102 and len(w.ids) <= 256 for w in windows)
    assert minilm_embedder.encode(text).shape == (384,)


# -- token-id inputs ---------------------------------------------------------------------------
def test_token_ids_give_the_same_vector_as_the_text(tiny_embedder: Embedder, tiny_model_dir) -> None:
    texts = ["Hello world", "The capital of China is Beijing."]
    from_text = tiny_embedder.encode(texts)
    wrapped = tiny_embedder.tokenize(texts)  # with <|endoftext|>
    bare = [ids[:-1] for ids in wrapped]  # without: qembed adds it
    assert _cos(tiny_embedder.encode(wrapped), from_text).min() >= MIN_COS
    assert _cos(tiny_embedder.encode(bare), from_text).min() >= MIN_COS
    assert _cos(tiny_embedder.encode(bare[0])[0], from_text[0]) >= MIN_COS  # one flat list = one input
    # A prompt applies to token inputs too: its ids go in front of the given ids. (Text inputs
    # tokenize prompt + text in one pass, like the reference, so "Query:" + "The" may merge.)
    prompt = list(tiny_embedder.tokenizer.prompt_ids(tiny_embedder.prompts["query"]))
    prompted = tiny_embedder.encode(bare, prompt_name="query")
    # prompt ids + text ids tokenized apart are not one canonical tokenization ("Query:" + "The"
    # would merge): sending them as ids needs --allow-foreign-token-ids
    permissive = Embedder(str(tiny_model_dir), allow_foreign_token_ids=True)
    assert _cos(prompted, permissive.encode([prompt + ids for ids in bare])).min() >= MIN_COS
    assert (
        _cos(prompted[0], tiny_embedder.encode("Hello world", prompt_name="query")) >= MIN_COS
    )  # no merge here


def test_token_ids_on_minilm(minilm_embedder: Embedder) -> None:
    text = "Token ids work for BERT models too."
    ids = minilm_embedder.tokenize(text)[0]
    assert ids[0] == 101 and ids[-1] == 102
    assert _cos(minilm_embedder.encode([ids])[0], minilm_embedder.encode(text)) >= MIN_COS
    assert _cos(minilm_embedder.encode([ids[1:-1]])[0], minilm_embedder.encode(text)) >= MIN_COS


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([[1, 2], [151669 + 100_000]], "input[1]"),
        ([[1, 2], [-5]], "input[1]"),
        ([[1, 2], []], "input[1]"),
        (["fine", ""], "input[1]"),
        ([], "empty"),
        (["text", [1, 2]], "input[1]"),
        ([[1, 2], "text"], "input[1]"),
        ([[1, True]], "input[0]"),
    ],
)
def test_bad_inputs(tiny_embedder: Embedder, inputs: list, needle: str) -> None:
    with pytest.raises(InputError) as info:
        tiny_embedder.encode(inputs)
    assert needle in info.value.message and info.value.param == "input"


def test_empty_string_alone(tiny_embedder: Embedder) -> None:
    with pytest.raises(InputError, match=r"input\[0\] is an empty string"):
        tiny_embedder.encode("")
