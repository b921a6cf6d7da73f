"""Tokenization: the real Qwen3 tokenizer ids, <|endoftext|> appended, old revisions fixed up."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qembed import Embedder

EOT = 151643

CASES = [
    ("Hello world", [9707, 1879, EOT]),
    ("你好", [108386, EOT]),
    ("The capital of China is Beijing.", [785, 6722, 315, 5616, 374, 26549, 13, EOT]),
]


@pytest.mark.parametrize(("text", "ids"), CASES)
def test_real_qwen3_token_ids(tiny_embedder: Embedder, text: str, ids: list[int]) -> None:
    assert tiny_embedder.tokenize(text) == [ids]


def test_tokenize_many_and_special_tokens(tiny_embedder: Embedder) -> None:
    assert tiny_embedder.tokenize([t for t, _ in CASES]) == [ids for _, ids in CASES]
    special = tiny_embedder.tokenizer.special
    assert special.head == () and special.tail == (EOT,)
    assert tiny_embedder.tokenizer.pad_id == EOT  # the reason pooling must use the mask, not ids


def test_no_chat_template(tiny_embedder: Embedder) -> None:
    ids = tiny_embedder.tokenize("Hello world")[0]
    im_start = tiny_embedder.tokenizer.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert im_start not in ids


def test_tokenize_counts_the_whole_long_input(tiny_model_dir) -> None:
    """tokenize() is for counting: the full prompt + content + specials, never cut to a window."""
    small = Embedder(str(tiny_model_dir), max_tokens=32, chunk_overlap=4)
    text = " ".join(f"word{i}" for i in range(60))
    full = small.tokenize(text)[0]
    assert len(full) > 32
    assert full == small.tokenizer.tokenizer(text)["input_ids"]  # exactly what the real tokenizer gives
    prompted = small.tokenize(text, prompt_name="query")[0]
    assert prompted == small.tokenizer.tokenizer(small.prompts["query"] + text)["input_ids"]
    # The same options as encode, validated the same way.
    with pytest.raises(Exception, match="dimensions"):
        small.tokenize(text, dimensions=3)


def test_old_tokenizer_revision_gets_eos_appended(
    tmp_path, tiny_model_dir, tiny_embedder: Embedder, caplog
) -> None:
    """A folder without tokenizer.json (vocab + merges only) does not append <|endoftext|>:
    qembed appends it itself, says so once, and the vectors equal the new revision's."""
    import shutil

    old = tmp_path / "old-revision"
    shutil.copytree(tiny_model_dir, old)
    (old / "tokenizer.json").unlink()
    with caplog.at_level(logging.WARNING, logger="qembed"):
        embedder = Embedder(str(old))
        texts = ["Hello world", "你好", "The capital of China is Beijing."]
        ids = embedder.tokenize(texts)
        vectors = embedder.encode(texts)
        embedder.encode(texts, prompt_name="query")
    assert ids == [i for _, i in CASES]
    eos_warnings = [r for r in caplog.records if str(EOT) in r.getMessage() and r.levelno == logging.WARNING]
    assert len(eos_warnings) == 1, [r.getMessage() for r in caplog.records]
    np.testing.assert_allclose(vectors, tiny_embedder.encode(texts), atol=1e-5)


def test_make_model_without_tokenizer_json(tmp_path) -> None:
    """dev.make_model(append_eos=False) writes the 'old revision' layout."""
    from qembed.dev.make_model import write_tokenizer

    write_tokenizer(tmp_path, append_eos=False)
    assert not (tmp_path / "tokenizer.json").exists()
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
