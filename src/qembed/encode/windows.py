"""Long inputs: cut token sequences into model windows under a policy.

A window is what the model sees: head specials + prompt tokens + a slice of content +
tail specials. Inputs that fit give one window (exactly ``tokenizer(prompt + text)``).
Longer ones follow the policy:

- ``chunk`` (default): overlapping windows over the content, each with the prompt; the
  input's vector is the mean of its window vectors weighted by their content tokens,
  re-normalized (see ``qembed.encode.assemble``);
- ``truncate``: keep the ``right``-truncated start or the ``left``-truncated end (the
  prompt is always kept);
- ``error``: a clear error with the token count and the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qembed.errors import InputError, InputTooLong
from qembed.model.tokenization import SpecialTokens


@dataclass(frozen=True)
class Window:
    """One model input row."""

    ids: list[int]
    owner: int  # index of the input this window belongs to
    weight: int  # content tokens it covers (weights the chunk mean)
    skip: int = 0  # leading real tokens excluded from pooling (include_prompt off)


def plan_windows(
    content: list[int],
    prefix_len: int,
    *,
    owner: int,
    special: SpecialTokens,
    limit: int,
    policy: Literal["chunk", "truncate", "error"],
    side: Literal["right", "left"] = "right",
    overlap: int = 0,
    exclude_prompt: bool = False,
    label: str = "",
) -> list[Window]:
    """Windows for one input. ``content`` starts with ``prefix_len`` prompt tokens; ``label``
    names the input in errors (default ``input[owner]``)."""
    label = label or f"input[{owner}]"
    head, tail = list(special.head), list(special.tail)
    budget = limit - special.count  # tokens left for prompt + content
    skip = len(head) + prefix_len if exclude_prompt else 0
    if len(content) <= budget:
        return [Window(head + content + tail, owner, max(1, len(content) - prefix_len), skip)]
    total = len(content) + special.count
    if policy == "error":
        raise InputTooLong(
            f"{label} has {total} tokens (prompt and special tokens included); the limit is {limit}. "
            "Shorten it, or send long_text='chunk' (windows) or long_text='truncate'.",
            param="input",
        )
    prefix, body = content[:prefix_len], content[prefix_len:]
    room = budget - prefix_len
    if room < 1:
        raise InputError(
            f"{label}: the prompt alone takes {prefix_len + special.count} of the {limit}-token window; "
            "use a shorter instruction or a larger window.",
            param="input",
        )
    if policy == "truncate":
        kept = body[:room] if side == "right" else body[-room:]
        return [Window(head + prefix + kept + tail, owner, len(kept), skip)]
    overlap = min(overlap, room - 1) if room > 1 else 0
    stride = room - overlap
    windows: list[Window] = []
    start = 0
    while True:
        piece = body[start : start + room]
        windows.append(Window(head + prefix + piece + tail, owner, len(piece), skip))
        if start + room >= len(body):
            return windows
        start += stride
