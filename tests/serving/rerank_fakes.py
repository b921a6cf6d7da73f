"""A deterministic ``PairScorer`` for route and service behaviour (ordering, limits, errors,
batching), without a model: word ids from a hash, the score = the query words the document
holds. The model side's parity is tested on real fixtures in tests/rerank.

Why the score is computed from the window's ids alone: ``run`` sees only windows, as the
real reranker does, so batching pairs of several requests together must give each pair
the same score as alone; the tests check that through the real queue.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np

from qembed.encode.windows import Window
from qembed.errors import InputTooLong
from qembed.rerank.protocol import PreparedPairs, RerankLongText, RerankModelInfo

CLS, SEP, END = 1, 2, 3
VOCAB = 50_000


def word_id(word: str) -> int:
    return 10 + int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:4], "little") % VOCAB


class FakeScorer:
    """``[CLS] instruction [SEP] query [SEP] document [END]``, one id per word; the logit is the
    number of query words found in the document minus 0.5 (so no overlap -> relevance < 0.5)."""

    def __init__(
        self,
        model_id: str = "hash/reranker-tiny",
        *,
        max_length: int = 64,
        instruction: str | None = "Given a web search query, retrieve relevant passages",
        gate: threading.Event | None = None,
    ) -> None:
        self.info = RerankModelInfo(
            model_id=model_id,
            kind="qwen3-reranker" if instruction is not None else "cross-encoder",
            max_length=max_length,
            default_instruction=instruction,
            device="cpu",
            dtype="float32",
        )
        self.gate = gate  # when set, run waits for it (tests that need a request in flight)
        self.batches: list[int] = []  # rows per batch run
        self.instructions: list[str | None] = []

    def prepare(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        long_text: RerankLongText = "truncate",
        max_doc_tokens: int | None = None,
    ) -> PreparedPairs:
        self.instructions.append(instruction)
        if max_doc_tokens is not None:  # one token per word here
            pairs = [(q, " ".join(d.split()[:max_doc_tokens])) for q, d in pairs]
        windows, tokens, truncated = [], [], []
        use = instruction if instruction is not None else self.info.default_instruction
        head = [word_id(w) for w in (use or "").split()][:8]
        for i, (query, document) in enumerate(pairs):
            q = [word_id(w) for w in query.split()]
            d = [word_id(w) for w in document.split()]
            room = self.info.max_length - len(head) - len(q) - 4
            cut = len(d) > room
            if cut and long_text == "error":
                raise InputTooLong(
                    f"documents[{i}] needs {len(d) + len(q) + len(head) + 4} tokens with the query; the window is "
                    f"{self.info.max_length}. Shorten it or send long_text='truncate'.",
                    param=f"documents[{i}]",
                )
            d = d[: max(0, room)]
            ids = [CLS, *head, SEP, *q, SEP, *d, END]
            windows.append(Window(ids, owner=i, weight=len(d)))
            tokens.append(len(ids))
            truncated.append(cut)
        return PreparedPairs(windows=windows, tokens=tokens, truncated=truncated)

    def run(self, windows: Sequence[Window]) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(60)
        self.batches.append(len(windows))
        out = []
        for w in windows:
            first = w.ids.index(SEP)
            second = w.ids.index(SEP, first + 1)
            query = set(w.ids[first + 1 : second])
            doc = set(w.ids[second + 1 : -1])
            out.append(len(query & doc) - 0.5)
        return np.asarray(out, dtype=np.float32)
