"""Pooling: token states -> one vector per sequence (last-token, mean, CLS).

Positions come from the attention mask, never from token ids: for Qwen3 the pad id equals
the appended ``<|endoftext|>`` id, so ids cannot tell padding from the real last token.
Works for left and right padding alike.
"""

from __future__ import annotations

import torch

from qembed.model.pipeline import Pooling


def _exclude_prefix(mask: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Zero the first ``skip[i]`` real tokens of each row (prompt tokens when include_prompt is off)."""
    first = mask.to(torch.int32).argmax(dim=1)  # index of the first real token (left padding aware)
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    keep = positions >= (first + skip).unsqueeze(1)
    return mask * keep.to(mask.dtype)


def pool(
    states: torch.Tensor, mask: torch.Tensor, mode: Pooling, skip: torch.Tensor | None = None
) -> torch.Tensor:
    """Pool ``states`` [batch, seq, hidden] under ``mask`` [batch, seq] into [batch, hidden] float32."""
    if mode == "lasttoken":
        # Last position whose mask is 1: flip, find the first 1, map back.
        last = mask.shape[1] - 1 - mask.flip(1).to(torch.int32).argmax(dim=1)
        return states[torch.arange(states.shape[0], device=states.device), last].float()
    if skip is not None and bool((skip > 0).any()):
        mask = _exclude_prefix(mask, skip)
    if mode == "cls":
        first = mask.to(torch.int32).argmax(dim=1)
        return states[torch.arange(states.shape[0], device=states.device), first].float()
    if mode == "mean":
        weights = mask.unsqueeze(-1).to(torch.float32)
        summed = (states.float() * weights).sum(dim=1)
        return summed / weights.sum(dim=1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling {mode!r}")
