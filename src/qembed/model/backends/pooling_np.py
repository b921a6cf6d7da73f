"""Pooling in numpy for the backends that do not run torch (ONNX Runtime, OpenVINO).

Same rules as ``qembed.model.pooling.pool`` (positions from the attention mask, never
from token ids; left or right padding), without touching torch: calling a torch op
from an ONNX Runtime worker wakes torch's OpenMP pool, whose spinning threads then
compete with ONNX Runtime's own for the same two cores.
"""

from __future__ import annotations

import numpy as np

from qembed.model.pipeline import Pooling


def _exclude_prefix(mask: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """Zero the first ``skip[i]`` real tokens of each row (prompt tokens when include_prompt is off)."""
    first = mask.argmax(axis=1)
    positions = np.arange(mask.shape[1])[None, :]
    return mask * (positions >= (first + skip)[:, None])


def last_token_index(mask: np.ndarray) -> np.ndarray:
    """Column of the last real token of each row."""
    return mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)


def pool_numpy(
    states: np.ndarray, mask: np.ndarray, mode: Pooling, skip: np.ndarray | None = None
) -> np.ndarray:
    """Pool ``states`` [batch, seq, hidden] under ``mask`` [batch, seq] into [batch, hidden] float32."""
    rows = np.arange(states.shape[0])
    if mode == "lasttoken":
        return np.asarray(states[rows, last_token_index(mask)], dtype=np.float32)
    if skip is not None and bool((skip > 0).any()):
        mask = _exclude_prefix(mask, skip)
    if mode == "cls":
        return np.asarray(states[rows, mask.argmax(axis=1)], dtype=np.float32)
    if mode == "mean":
        weights = mask[:, :, None].astype(np.float32)
        summed = (states.astype(np.float32, copy=False) * weights).sum(axis=1)
        return summed / np.maximum(weights.sum(axis=1), 1e-9)
    raise ValueError(f"unknown pooling {mode!r}")
