"""Window vectors -> one vector per input: chunk mean, normalize, Matryoshka truncation.

Order matters and matches the reference: normalize each window as the model's Normalize
module would, take the token-weighted mean over an input's windows, re-normalize, then
truncate to ``dimensions`` and L2-normalize again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qembed.encode.windows import Window
from qembed.errors import ModelOutputError


def _l2(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    if not np.all(norms > 0):
        raise ModelOutputError(
            "The model produced a zero vector; refusing to return it (check the model weights)."
        )
    return matrix / norms


def assemble(
    windows: Sequence[Window],
    vectors: np.ndarray,
    *,
    n_inputs: int,
    normalize: bool,
    dimensions: int | None,
) -> np.ndarray:
    """Combine ``vectors[i]`` (the pooled vector of ``windows[i]``) into [n_inputs, dim] float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise ModelOutputError("The model produced non-finite values (NaN/inf); no vectors were returned.")
    if normalize:
        vectors = _l2(vectors)
    out = np.zeros((n_inputs, vectors.shape[1]), dtype=np.float64)
    weight = np.zeros(n_inputs, dtype=np.float64)
    for window, vector in zip(windows, vectors, strict=True):
        out[window.owner] += window.weight * vector
        weight[window.owner] += window.weight
    if not np.all(weight > 0):
        raise ModelOutputError("Internal error: an input got no window.")
    out = (out / weight[:, None]).astype(np.float32)
    if normalize:
        out = _l2(out)
    if dimensions is not None and dimensions < out.shape[1]:
        out = out[:, :dimensions]
        out = _l2(out) if normalize else np.ascontiguousarray(out)
    return out
