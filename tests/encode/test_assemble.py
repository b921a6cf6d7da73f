"""assemble: window vectors -> input vectors (weighted mean, normalize, Matryoshka)."""

from __future__ import annotations

import numpy as np
import pytest

from qembed.encode.assemble import assemble
from qembed.encode.windows import Window
from qembed.errors import ModelOutputError


def _w(owner: int, weight: int) -> Window:
    return Window([0] * weight, owner, weight)


def test_token_weighted_mean_of_normalized_windows_renormalized() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 8)).astype(np.float32)
    windows = [_w(0, 10), _w(0, 30), _w(1, 5), _w(0, 2)]
    out = assemble(windows, vectors, n_inputs=2, normalize=True, dimensions=None)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mean = (10 * unit[0] + 30 * unit[1] + 2 * unit[3]) / 42
    np.testing.assert_allclose(out[0], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(out[1], unit[2], atol=1e-6)
    assert out.dtype == np.float32


def test_dimensions_truncate_then_renormalize() -> None:
    vectors = np.arange(1, 17, dtype=np.float32).reshape(2, 8)
    out = assemble([_w(0, 1), _w(1, 1)], vectors, n_inputs=2, normalize=True, dimensions=3)
    full = assemble([_w(0, 1), _w(1, 1)], vectors, n_inputs=2, normalize=True, dimensions=None)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(
        out, full[:, :3] / np.linalg.norm(full[:, :3], axis=1, keepdims=True), atol=1e-6
    )
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)


def test_without_normalize_the_mean_is_raw() -> None:
    vectors = np.array([[2.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    out = assemble([_w(0, 1), _w(0, 3)], vectors, n_inputs=1, normalize=False, dimensions=None)
    np.testing.assert_allclose(out, [[0.5, 3.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    vectors = np.ones((1, 4), dtype=np.float32)
    vectors[0, 2] = bad
    with pytest.raises(ModelOutputError):
        assemble([_w(0, 1)], vectors, n_inputs=1, normalize=True, dimensions=None)


def test_zero_vector_is_refused_when_normalizing() -> None:
    with pytest.raises(ModelOutputError):
        assemble([_w(0, 1)], np.zeros((1, 4), dtype=np.float32), n_inputs=1, normalize=True, dimensions=None)
