"""plan_batches (length-sorted, token budget, row cap) and pad_windows (left/right)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from qembed.encode.batching import pad_windows, plan_batches
from qembed.encode.windows import Window


@pytest.mark.parametrize("seed", range(5))
def test_every_index_once_within_budget_and_rows(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(200)]
    batches = plan_batches(lengths, max_tokens=1024, max_rows=16)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 16
        assert max(lengths[i] for i in batch) * len(batch) <= 1024
    widths = [max(lengths[i] for i in b) for b in batches]
    assert widths == sorted(widths, reverse=True)  # longest first, similar lengths together


def test_a_row_longer_than_the_budget_gets_its_own_batch() -> None:
    assert plan_batches([5000, 10, 10], max_tokens=100, max_rows=8) == [[0], [1, 2]]


def test_row_cap() -> None:
    assert [len(b) for b in plan_batches([3] * 10, max_tokens=10_000, max_rows=4)] == [4, 4, 2]


def test_empty() -> None:
    assert plan_batches([], max_tokens=10, max_rows=2) == []


def test_pad_left_and_right() -> None:
    windows = [Window([1, 2, 3], 0, 3), Window([4], 1, 1, skip=1)]
    ids, mask, skip = pad_windows(windows, pad_id=0, side="left")
    np.testing.assert_array_equal(ids, [[1, 2, 3], [0, 0, 4]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(skip, [0, 1])
    ids, mask, _ = pad_windows(windows, pad_id=0, side="right")
    np.testing.assert_array_equal(ids, [[1, 2, 3], [4, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    assert ids.dtype == np.int64 and mask.dtype == np.int64
