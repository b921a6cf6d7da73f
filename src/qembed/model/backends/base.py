"""What every inference backend provides: padded ids in, pooled vectors out."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """A loaded model that turns padded token batches into pooled float32 vectors."""

    name: str
    device: str
    dtype: str

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, skip: np.ndarray | None) -> np.ndarray:
        """[batch, seq] int64 ids and mask -> [batch, hidden] float32, pooled, not normalized.

        ``skip[i]`` leading real tokens are left out of mean/CLS pooling (include_prompt off).
        """
        ...
