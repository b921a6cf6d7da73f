"""The embedding cache: identical vectors, counted hits, keys that change with what changes a vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qembed.embedding.cache import CachedCall, CacheEntry, EmbeddingCache
from qembed.errors import InputError, InternalError

TEXTS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Embeddings turn text into vectors.",
]


def _entry(value: float, tokens: int = 3) -> CacheEntry:
    return CacheEntry(np.full(4, value, dtype=np.float32), tokens)


def test_lru_evicts_least_recently_used_and_counts() -> None:
    cache = EmbeddingCache(2)
    cache.put_many(["a", "b"], [_entry(1), _entry(2)])
    assert cache.get_many(["a"])[0].vector[0] == 1  # "a" is now the most recent
    cache.put_many(["c"], [_entry(3)])  # evicts "b"
    found = cache.get_many(["a", "b", "c"])
    assert [None if f is None else float(f.vector[0]) for f in found] == [1.0, None, 3.0]
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)
    assert cache.stats()["hit_rate"] == pytest.approx(0.75)


def test_on_lookup_hook_sees_each_lookup() -> None:
    seen = []
    cache = EmbeddingCache(4)
    cache.on_lookup = lambda hits, misses: seen.append((hits, misses))
    cache.put_many(["a"], [_entry(1)])
    cache.get_many(["a", "z", "y"])
    assert seen == [(1, 2)]


def test_disk_cache_survives_a_new_instance_and_promotes_to_memory(tmp_path: Path) -> None:
    first = EmbeddingCache(0, directory=tmp_path, namespace="m")
    vector = np.linspace(-1, 1, 8, dtype=np.float32)
    first.put_many(["k"], [CacheEntry(vector, 7)])
    first.close()
    second = EmbeddingCache(4, directory=tmp_path, namespace="m")
    entry = second.get_many(["k"])[0]
    assert entry is not None and entry.tokens == 7
    assert np.array_equal(entry.vector, vector)
    assert len(second) == 1  # promoted
    assert not entry.vector.flags.writeable  # callers cannot corrupt the cache in place
    second.close()


def test_key_depends_on_namespace_options_and_input_kind() -> None:
    a, b = EmbeddingCache(1, namespace="model-a"), EmbeddingCache(1, namespace="model-b")
    assert a.key("o", "text") != b.key("o", "text")
    assert a.key("o1", "text") != a.key("o2", "text")
    assert a.key("o", "1") != a.key("o", (1,))
    assert a.key("o", (1, 2)) == a.key("o", (1, 2))


@pytest.fixture(scope="module")
def cached_tiny(tiny_model_dir: Path):
    from qembed import Embedder

    return Embedder(str(tiny_model_dir), cache_size=64)


def test_encode_through_cache_gives_identical_vectors_and_usage(cached_tiny, tiny_embedder) -> None:
    cached_tiny.cache.clear()
    want = tiny_embedder.encode_with_usage(TEXTS)
    first = cached_tiny.encode_with_usage(TEXTS)
    hits_before = cached_tiny.cache.hits
    again = cached_tiny.encode_with_usage([TEXTS[2], TEXTS[0], TEXTS[1]])
    assert np.array_equal(first.vectors, want.vectors)
    assert np.array_equal(again.vectors, want.vectors[[2, 0, 1]])
    assert cached_tiny.cache.hits - hits_before == 3
    assert first.prompt_tokens == want.prompt_tokens == again.prompt_tokens


def test_partial_hits_run_only_the_missing_inputs(cached_tiny, tiny_embedder, monkeypatch) -> None:
    cached_tiny.cache.clear()
    cached_tiny.encode([TEXTS[0]])
    ran: list[int] = []
    original = cached_tiny.run
    monkeypatch.setattr(cached_tiny, "run", lambda windows: ran.append(len(windows)) or original(windows))
    out = cached_tiny.encode(TEXTS)
    assert sum(ran) == 2  # TEXTS[0] came from the cache
    # Other batch-mates (other padding) move float32 results in the last bits only.
    assert np.allclose(out, tiny_embedder.encode(TEXTS), atol=1e-5)


def test_options_that_change_vectors_are_separate_entries(cached_tiny, tiny_embedder) -> None:
    cached_tiny.cache.clear()
    plain = cached_tiny.encode(TEXTS[:1])
    short = cached_tiny.encode(TEXTS[:1], dimensions=32)
    query = cached_tiny.encode(TEXTS[:1], task="sts")
    assert short.shape == (1, 32) and plain.shape[1] == tiny_embedder.dimension
    assert np.array_equal(short, tiny_embedder.encode(TEXTS[:1], dimensions=32))
    assert np.array_equal(query, tiny_embedder.encode(TEXTS[:1], task="sts"))
    assert not np.allclose(query, plain)
    assert cached_tiny.cache.misses >= 3 and len(cached_tiny.cache) == 3


def test_token_id_inputs_are_cached_too(cached_tiny, tiny_embedder) -> None:
    ids = tiny_embedder.tokenize(["token ids in"])[0]
    first = cached_tiny.encode([ids])
    hits = cached_tiny.cache.hits
    second = cached_tiny.encode([ids])
    assert np.array_equal(first, second) and cached_tiny.cache.hits == hits + 1
    assert np.array_equal(first, tiny_embedder.encode([ids]))


def test_invalid_inputs_still_raise_the_same_errors(cached_tiny) -> None:
    with pytest.raises(InputError, match="empty string"):
        cached_tiny.encode(["ok", ""])
    with pytest.raises(InputError, match="dimensions"):
        cached_tiny.encode(["ok"], dimensions=5)


def test_server_path_begin_prepare_run_finish(cached_tiny, tiny_embedder) -> None:
    """What the server does: begin, prepare and run only ``todo``, then finish the call."""
    cached_tiny.cache.clear()
    cached_tiny.encode(TEXTS[1:2])
    resolved, call = cached_tiny.begin(TEXTS)
    assert call.missing == [0, 2] and list(call.todo.items) == [TEXTS[0], TEXTS[2]]
    assert call.todo.positions == (0, 2)  # the caller's numbering survives the split
    prepared = cached_tiny.prepare(call.todo, resolved)
    finished = cached_tiny.finish(prepared, cached_tiny.run(prepared.windows))
    vectors, tokens = call.finish(finished, prepared.tokens_per_input())
    want = tiny_embedder.encode_with_usage(TEXTS)
    assert np.allclose(vectors, want.vectors, atol=1e-6) and tokens == want.prompt_tokens
    assert cached_tiny.begin(TEXTS)[1].todo is None


def test_without_a_cache_todo_is_every_input(tiny_embedder) -> None:
    resolved, call = tiny_embedder.begin(TEXTS)
    assert call.cache is None and call.todo is not None and list(call.todo.items) == TEXTS
    with pytest.raises(InternalError, match="one vector"):
        call.finish(np.zeros((1, 4), dtype=np.float32), [1])


def test_errors_name_the_callers_index_after_the_cache_split(tiny_model_dir: Path) -> None:
    """Inputs the cache answers are not sent on; an error about one that is still names the
    caller's input[i], not its place among the missing ones."""
    from qembed import Embedder

    cached = Embedder(str(tiny_model_dir), cache_size=8, max_tokens=32)
    cached.encode(["seen before", "also seen"])
    with pytest.raises(InputError, match=r"^input\[1\] is an empty string"):
        cached.encode(["seen before", ""])
    long = "word " * 100
    with pytest.raises(InputError, match=r"^input\[2\] has \d+ tokens"):
        cached.encode(["seen before", "also seen", long], long_text="error")
    assert CachedCall.begin(None, cached.parse(["a"]), cached.resolve()).todo is not None


def test_disk_cache_through_embedder(tmp_path: Path, tiny_model_dir: Path, tiny_embedder) -> None:
    from qembed import Embedder

    writer = Embedder(str(tiny_model_dir), cache_dir=str(tmp_path))
    want = writer.encode(TEXTS)
    writer.cache.close()
    reader = Embedder(str(tiny_model_dir), cache_dir=str(tmp_path))
    got = reader.encode(TEXTS)
    assert reader.cache.hits == 3 and reader.cache.misses == 0
    assert np.array_equal(got, want) and np.array_equal(got, tiny_embedder.encode(TEXTS))
    reader.cache.close()


def test_two_processes_worth_of_openers_share_one_new_cache_dir(tmp_path: Path) -> None:
    """Two servers started together on one --cache-dir: both open it (SQLite skips its busy
    handler for the WAL switch, which made one fail with 'database is locked')."""
    import threading

    from qembed.embedding.cache import EmbeddingCache

    errors: list[BaseException] = []
    for trial in range(60):
        directory = tmp_path / f"c{trial}"

        def open_it(directory: Path = directory) -> None:
            try:
                EmbeddingCache(10, directory=directory, namespace="m").close()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors
