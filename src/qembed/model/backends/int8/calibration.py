"""The calibration set every int8 build is calibrated and judged on.

``qembed/model/backends/calibration/texts.jsonl``: 200 texts written for qembed (Chinese,
English, mixed Chinese/English technical text, code, edge cases; queries, passages and
long passages; README beside it). Every third text is in the ``calib`` split (SmoothQuant
statistics), the rest in ``gate`` (the float32-vs-int8 comparison), so the gate judges
an int8 model on texts its scales were not fitted to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from qembed.model.pipeline import PipelineSpec

if TYPE_CHECKING:
    import torch

Split = Literal["calib", "gate", "all"]
# Long texts are cut here: the gate is about arithmetic, and 512 tokens covers the set.
MAX_TOKENS = 512
BATCH_ROWS = 8


def calibration_file() -> Path:
    return Path(str(resources.files("qembed.model.backends") / "calibration" / "texts.jsonl"))


@lru_cache(maxsize=1)
def _records() -> tuple[dict, ...]:
    with calibration_file().open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def calibration_texts(split: Split = "all") -> list[str]:
    """The texts of one split, in file order."""
    return [r["text"] for r in _records() if split == "all" or r["split"] == split]


def token_batches(
    folder: Path, spec: PipelineSpec, texts: list[str], *, rows: int = BATCH_ROWS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``texts`` as the engine would feed them: the model's special tokens around each
    text, cut to ``MAX_TOKENS``, length-sorted, padded on the model's side, ``rows`` per
    batch. Returns ``(input_ids, attention_mask)`` pairs; the order of rows is the order
    of ``texts`` after sorting (``batch_order``)."""
    from qembed.model.tokenization import TextTokenizer

    tok = TextTokenizer(Path(folder), spec)
    room = MAX_TOKENS - tok.special.count
    seqs = [list(tok.special.head) + ids[:room] + list(tok.special.tail) for ids in tok.content_ids(texts)]
    order = batch_order(seqs)
    out = []
    for start in range(0, len(order), rows):
        chunk = [seqs[i] for i in order[start : start + rows]]
        width = max(len(s) for s in chunk)
        ids = np.full((len(chunk), width), tok.pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for r, seq in enumerate(chunk):
            cols = slice(width - len(seq), width) if spec.padding_side == "left" else slice(0, len(seq))
            ids[r, cols] = seq
            mask[r, cols] = 1
        out.append((ids, mask))
    return out


def batch_order(seqs: list[list[int]]) -> list[int]:
    """Indices of ``seqs`` longest first (stable), the order ``token_batches`` uses."""
    return sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))


def torch_batches(
    batches: list[tuple[np.ndarray, np.ndarray]],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    import torch

    for ids, mask in batches:
        yield torch.from_numpy(ids), torch.from_numpy(mask)
