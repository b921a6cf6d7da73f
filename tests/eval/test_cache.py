"""Vector cache: a second run embeds nothing, an interrupted run leaves a usable cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qembed.eval.cache import VectorCache
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
    cache = VectorCache(tmp_path / "cache")
    # chunk 4: queries take 2 calls (6 texts), the corpus 8 calls; interrupt on the 5th call
    interrupted = FakeTarget(chunk_size=4, interrupt_on_call=5)
    with pytest.raises(KeyboardInterrupt):
        evaluate_retrieval(interrupted, data, cache=cache)
    done = len(interrupted.embedded)
    assert done == 6 + 2 * 4
    resumed = FakeTarget(chunk_size=4)
    result = evaluate_retrieval(resumed, data, cache=cache)
    assert len(resumed.embedded) == 36 - done
    assert not set(resumed.embedded) & set(interrupted.embedded)
    clean = evaluate_retrieval(FakeTarget(chunk_size=4), data, cache=None)
    assert result.scores == clean.scores


def test_an_interrupted_write_stores_nothing_of_its_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One chunk, one transaction: a write killed half way leaves what was stored before, and none of its rows."""
    store = VectorCache(tmp_path).open({"t": 1})
    store.add(["a", "b"], np.ones((2, 3)))
    db = store.cache._db
    real = db.executemany

    class HalfWay:
        def __getattr__(self, name):
            return getattr(db, name)

        def executemany(self, sql, rows):
            real(sql, list(rows)[:1])  # the first row reaches the file, then the process is interrupted
            raise KeyboardInterrupt

    monkeypatch.setattr(store.cache, "_db", HalfWay())
    with pytest.raises(KeyboardInterrupt):
        store.add(["c", "d"], np.zeros((2, 3)))
    monkeypatch.setattr(store.cache, "_db", db)
    store.add(
        ["e"], np.ones((1, 3))
    )  # this commit would store the half chunk had put_many not rolled it back
    store.cache.close()
    reopened = VectorCache(tmp_path).open({"t": 1})
    got = reopened.get_many(["a", "b", "c", "d", "e"])
    assert [g is not None for g in got] == [True, True, False, False, True]


def test_namespaces_share_one_file_and_never_each_others_vectors(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path)
    cache.open({"t": "one"}).add(["a"], np.full((1, 2), 1.0))
    cache.open({"t": "two"}).add(["a"], np.full((1, 2), 2.0))
    cache.close()
    again = VectorCache(tmp_path)
    assert float(again.open({"t": "one"}).get_many(["a"])[0][0]) == 1.0
    assert float(again.open({"t": "two"}).get_many(["a"])[0][0]) == 2.0
    assert again.open({"t": "three"}).get_many(["a"]) == [None]
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm", ".open.lock"))] == [
        "embeddings.sqlite3"
    ]


def test_no_file_until_used(tmp_path: Path) -> None:
    VectorCache(tmp_path / "never")
    assert not (tmp_path / "never").exists()
