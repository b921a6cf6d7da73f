"""The reranker's contract, shared by the model code (``rerank/reranker.py``), the server
(its own queue and model thread) and search.

Why a raw score and an activation: both reranker kinds reduce to one logit per pair.
Qwen3-Reranker's relevance is ``softmax([no, yes])[yes]`` of the last position, which is
exactly ``sigmoid(logit_yes - logit_no)``; a one-label cross-encoder's is
``sigmoid(logit)`` (what sentence-transformers' ``CrossEncoder.predict`` returns by
default). So ``run`` returns that raw logit per window and ``relevance`` maps it to
[0, 1]; TEI's ``raw_scores: true`` returns the raw value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from qembed.encode.windows import Window

RerankKind = Literal["qwen3-reranker", "cross-encoder"]
RerankLongText = Literal["truncate", "error"]


@dataclass(frozen=True)
class RerankModelInfo:
    """What a route, ``/v1/models`` and ``/info`` say about the reranker served."""

    model_id: str
    kind: RerankKind
    max_length: int  # tokens of one pair, prompt and specials included
    default_instruction: str | None  # Qwen3-Reranker's; None for cross-encoders
    device: str
    dtype: str


@dataclass
class PreparedPairs:
    """Pairs turned into model rows: ``windows[i]`` is pair ``i`` (``owner == i``)."""

    windows: list[Window]
    tokens: list[int] = field(default_factory=list)  # tokens each pair costs (usage)
    truncated: list[bool] = field(default_factory=list)  # the document was cut to fit the window


@dataclass(frozen=True)
class RankedDocument:
    """One document of ``rank``: its position in the caller's list, relevance in [0, 1]."""

    index: int
    score: float
    raw_score: float
    document: str | None = None


class PairScorer(Protocol):
    """What the server's rerank service needs from a reranker."""

    info: RerankModelInfo

    def prepare(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        long_text: RerankLongText = "truncate",
        max_doc_tokens: int | None = None,
    ) -> PreparedPairs:
        """One window per pair; ``max_doc_tokens`` (Cohere v2's ``max_tokens_per_doc``) first
        cuts each document after that many of its own tokens."""
        ...

    def run(self, windows: Sequence[Window]) -> np.ndarray:
        """Raw logits, float32, shape ``(len(windows),)``, in the order given; any batch shape
        gives the same value for a pair (within 1e-5)."""
        ...


def relevance(raw: np.ndarray) -> np.ndarray:
    """Raw logits -> relevance in [0, 1] (the logistic function), float32."""
    raw = np.asarray(raw, dtype=np.float64)
    return (1.0 / (1.0 + np.exp(-raw))).astype(np.float32)
