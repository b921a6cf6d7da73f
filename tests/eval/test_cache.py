"""Vector cache: a second run embeds nothing, an interrupted run leaves a usable cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from qembed.eval import cache as cache_mod
from qembed.eval.cache import VectorCache, text_key
from qembed.eval.datasets import load_beir
from qembed.eval.encode import encode_texts
from qembed.eval.prompts import Prompting
from qembed.eval.tasks import evaluate_retrieval

from .conftest import FakeTarget


def test_second_retrieval_run_embeds_nothing(tmp_path: Path, make_beir) -> None:
    data = load_beir(make_beir(n_docs=30, n_queries=6))
    cache = VectorCache(tmp_path / "cache")
    first_target = FakeTarget()
    first = evaluate_retrieval(first_target, data, cache=cache)
    assert len(first_target.embedded) == 36 and first.counts.embedded == 36 and first.counts.cached == 0
    second_target = FakeTarget()
    second = evaluate_retrieval(second_target, data, cache=cache)
    assert second_target.embedded == [] and second_target.calls == 0
    assert second.counts.embedded == 0 and second.counts.cached == 36
    assert second.scores == first.scores


def test_cache_key_follows_target_and_prompt(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path)
    texts = ["a", "b"]
    encode_texts(FakeTarget(tag="one"), texts, Prompting("retrieval"), "query", cache=cache)
    other_model = FakeTarget(tag="two")
    encode_texts(other_model, texts, Prompting("retrieval"), "query", cache=cache)
    assert other_model.embedded == texts  # another identity: nothing shared
    other_prompt = FakeTarget(tag="one")
    encode_texts(other_prompt, texts, Prompting("retrieval", instruction="Find it"), "query", cache=cache)
    assert other_prompt.embedded == texts  # another instruction: other vectors
    same = FakeTarget(tag="one")
    encode_texts(same, texts, Prompting("retrieval"), "query", cache=cache)
    assert same.embedded == []


def test_interrupted_run_keeps_finished_chunks(tmp_path: Path, make_beir) -> None:
    data = load_beir(make_beir(n_docs=30, n_queries=6))
    cache = VectorCache(tmp_path / "cache", flush_rows=10_000)  # only the interrupt flushes
    # chunk 4: queries take 2 calls (6 texts), the corpus 8 calls; interrupt on the 5th call
    interrupted = FakeTarget(chunk_size=4, interrupt_on_call=5)
    with pytest.raises(KeyboardInterrupt):
        evaluate_retrieval(interrupted, data, cache=cache)
    done = len(interrupted.embedded)
    assert done == 6 + 2 * 4
    assert list((tmp_path / "cache").rglob("*.tmp")) == []
    resumed = FakeTarget(chunk_size=4)
    result = evaluate_retrieval(resumed, data, cache=cache)
    assert len(resumed.embedded) == 36 - done
    assert not set(resumed.embedded) & set(interrupted.embedded)
    clean = evaluate_retrieval(FakeTarget(chunk_size=4), data, cache=None)
    assert result.scores == clean.scores


def test_interrupt_during_shard_write_leaves_previous_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = VectorCache(tmp_path, flush_rows=2).open({"t": 1})
    store.add([text_key("a"), text_key("b")], np.ones((2, 3)))  # flushed: one complete shard
    real_savez = np.savez

    def broken(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.np, "savez", broken)
    with pytest.raises(KeyboardInterrupt):
        store.add([text_key("c"), text_key("d")], np.zeros((2, 3)))
    monkeypatch.setattr(cache_mod.np, "savez", real_savez)
    assert list(tmp_path.rglob("*.tmp")) == []  # the half-written file never got a shard name
    reopened = VectorCache(tmp_path).open({"t": 1})
    assert len(reopened) == 2
    assert reopened.get(text_key("a")) is not None and reopened.get(text_key("c")) is None


def test_unreadable_shard_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = VectorCache(tmp_path, flush_rows=1).open({"t": 2})
    store.add([text_key("a")], np.ones((1, 3)))
    (store.folder / "shard-99999999999999999999-0-bad.npz").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        reopened = VectorCache(tmp_path).open({"t": 2})
    assert len(reopened) == 1
    assert "unreadable cache shard" in caplog.text


def test_many_shards_are_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "MERGE_ABOVE", 3)
    store = VectorCache(tmp_path, flush_rows=1).open({"t": 3})
    for i in range(5):
        store.add([text_key(str(i))], np.full((1, 2), i, dtype=np.float32))
    assert len(list(store.folder.glob("shard-*.npz"))) == 5
    merged = VectorCache(tmp_path).open({"t": 3})
    assert len(list(merged.folder.glob("shard-*.npz"))) == 1
    assert [float(merged.get(text_key(str(i)))[0]) for i in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
