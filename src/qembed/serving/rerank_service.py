"""The rerank service: the reranker's own model thread and batch queue, async ``score``/``rank``.

Request path (``score``), the embedding service's with pairs instead of texts:

1. admission: a request slot (``--max-concurrent-requests``) or ``QueueFull``;
2. ``PairScorer.prepare`` on the tokenizer pool: one window per (query, document) pair
   (the prompt, the document truncated to ``--rerank-max-length`` or refused per
   ``long_text``), off the event loop and off the model thread;
3. ``--max-request-tokens`` (413), then ``BatchQueue.submit``: the pairs wait with other
   requests' pairs, packed by token budget (``--max-batch-tokens``) on the reranker's own
   thread (token admission: ``--max-queued-tokens`` -> 429);
4. the raw logits back in pair order; ``relevance`` (sigmoid) gives the scores in [0, 1].

Why its own queue and thread rather than the embedder's: a batch runs one model, and the
two models' budgets differ (a reranker pair is a long prompt + document, an embedding
query a few tokens); separate queues keep a burst of rerank pairs from delaying queries
being embedded, and each model keeps the fairness rules of ``serving/queue``.

No web framework here: the HTTP routes and the search router call ``score``/``rank``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from qembed.encode.windows import Window
from qembed.errors import InputError, ModelOutputError, RequestTooLarge
from qembed.rerank.protocol import PairScorer, RankedDocument, RerankLongText, relevance
from qembed.serving.service import CPU_WARMUP_TOKENS, CPU_WARMUP_WINDOW, ModelService
from qembed.settings import Settings

_WARMUP_QUERY = "What does the reranker warm-up check?"
_WARMUP_SENTENCE = "The quick brown fox jumps over the lazy dog while the reranker warms up. "
_WARMUP_TOKENS_PER_SENTENCE = 16  # about what one sentence costs (the document is cut to the window anyway)
_WARMUP_PROMPT_TOKENS = 64  # Qwen3-Reranker's prompt, suffix and query take about this many


@dataclass(frozen=True)
class RerankResult:
    """One request's pairs, in the order given."""

    raw: np.ndarray  # float32 (n,): the model's logit per pair (TEI's raw_scores)
    scores: np.ndarray  # float32 (n,): relevance in [0, 1]
    prompt_tokens: int  # tokens the model ran (usage)
    truncated: list[bool]  # the document was cut to fit the window


def check_pairs_input(
    query: Any, documents: Any, *, max_documents: int | None = None, field: str = "documents"
) -> None:
    """The mistakes a caller can make before any tokenization, as ``InputError``s naming the
    field (``field``: what the request calls its documents, e.g. TEI's ``texts``)."""
    if not isinstance(query, str) or not query.strip():
        raise InputError("query is empty; send the text the documents are ranked against.", param="query")
    if not isinstance(documents, (list, tuple)) or not documents:
        raise InputError(f"{field} is empty; send at least one document to rank.", param=field)
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise InputError(
                f"{field}[{i}] is a {type(doc).__name__}; each document is a string.", param=f"{field}[{i}]"
            )
        if not doc.strip():
            raise InputError(
                f"{field}[{i}] is empty; send text to rank, or leave it out.", param=f"{field}[{i}]"
            )
    if max_documents is not None and len(documents) > max_documents:
        raise RequestTooLarge(
            f"This request has {len(documents)} {field}; the limit is {max_documents} per request. Send fewer, "
            "or start the server with a larger --max-client-batch-size (env QEMBED_MAX_CLIENT_BATCH_SIZE).",
            param=field,
        )


class RerankService(ModelService):
    """Owns the reranker's model worker and queue; ``score`` is safe to call from any coroutine."""

    log_prefix = "reranker "
    input_param = "documents"
    too_large_hint = "Send fewer or shorter documents (long_text='truncate' caps each pair at one window)"

    def __init__(self, scorer: PairScorer, settings: Settings, *, on_batch: Any = None) -> None:
        self.scorer = scorer
        super().__init__(
            self._run, settings, device=scorer.info.device, on_batch=on_batch, name="qembed-rerank"
        )

    def _run(self, windows: Sequence[Window]) -> np.ndarray:
        """The model thread's call: one logit per window, as the queue's ``[n, 1]`` rows."""
        raw = np.asarray(self.scorer.run(windows), dtype=np.float32)
        return raw.reshape(len(windows), 1) if raw.size == len(windows) else raw

    def default_instruction(self, instruction: str | None) -> str | None:
        """The request's instruction, else ``--rerank-instruction``, for models that take one
        (a cross-encoder has no prompt: an instruction sent to one is a 400)."""
        if instruction is not None:
            if self.scorer.info.default_instruction is None:
                raise InputError(
                    f"The served reranker {self.scorer.info.model_id!r} is a {self.scorer.info.kind}; it takes no "
                    "instruction. Omit `instruction`.",
                    param="instruction",
                )
            if not instruction.strip():
                raise InputError("instruction is empty; omit it for the default one.", param="instruction")
            return instruction
        if self.scorer.info.default_instruction is None:
            return None
        return self.settings.rerank_instruction

    def default_long_text(self, long_text: RerankLongText | None) -> RerankLongText:
        """The request's policy, else the server's: ``--long-text error`` refuses long pairs,
        anything else truncates (a pair is never chunked: one score per document)."""
        if long_text is not None:
            return long_text
        return "error" if self.settings.long_text == "error" else "truncate"

    # -- lifecycle ------------------------------------------------------------------------
    def warmup_windows(self) -> list[Window]:
        """A full batch of long pairs through ``prepare`` (so the warm-up is the real prompt);
        bounded on CPU as the embedder's is."""
        info = self.scorer.info
        length = min(info.max_length, self.max_batch_tokens)
        total = self.max_batch_tokens
        if not info.device.startswith("cuda"):
            length, total = min(length, CPU_WARMUP_WINDOW), min(total, CPU_WARMUP_TOKENS)
        # About ``length`` tokens with the prompt (the scorer cuts it to its window anyway); the
        # window is used as prepared: a cross-encoder's row carries segment ids of its own length.
        sentences = max(1, (length - _WARMUP_PROMPT_TOKENS) // _WARMUP_TOKENS_PER_SENTENCE)
        window = self.scorer.prepare(
            [(_WARMUP_QUERY, _WARMUP_SENTENCE * sentences)],
            instruction=self.default_instruction(None),
            long_text="truncate",
        ).windows[0]
        rows = max(1, min(self.settings.max_batch_size, total // max(1, len(window.ids))))
        return [dataclasses.replace(window, owner=i) for i in range(rows)]

    # -- work -------------------------------------------------------------------------------
    async def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        long_text: RerankLongText | None = None,
        bulk: bool = False,
        max_doc_tokens: int | None = None,
    ) -> RerankResult:
        """Relevance of each (query, document) pair, batched with every other rerank request in
        flight. Raises qembed errors (InputError, InputTooLong, RequestTooLarge, QueueFull, ...)."""
        if not pairs:
            raise InputError("no pairs to score; send at least one document.", param="documents")
        loop = asyncio.get_running_loop()
        with self.queue.admit():
            prepared = await loop.run_in_executor(
                self._pool,
                partial(
                    self.scorer.prepare,
                    pairs,
                    instruction=self.default_instruction(instruction),
                    long_text=self.default_long_text(long_text),
                    max_doc_tokens=max_doc_tokens,
                ),
            )
            if len(prepared.windows) != len(pairs):
                raise ModelOutputError(
                    f"the reranker prepared {len(prepared.windows)} windows for {len(pairs)} pairs"
                )
            tokens = list(prepared.tokens) or [len(w.ids) for w in prepared.windows]
            self.check_request_tokens(sum(tokens))
            rows = await self.queue.submit(prepared.windows, bulk=bulk)
        raw = np.asarray(rows, dtype=np.float32).reshape(-1)
        if raw.shape != (len(pairs),) or not np.isfinite(raw).all():
            bad = [i for i, v in enumerate(raw.tolist()) if not np.isfinite(v)][:5]
            raise ModelOutputError(
                f"The reranker returned non-finite scores (pairs {bad}); the model or its dtype is broken "
                "(try --dtype float32)."
            )
        truncated = list(prepared.truncated) or [False] * len(pairs)
        return RerankResult(raw=raw, scores=relevance(raw), prompt_tokens=sum(tokens), truncated=truncated)

    async def relevance(self, query: str, texts: Sequence[str]) -> list[float]:
        """Relevance of each text to ``query``, in order: the search router's re-rank hook
        (``/v1/search`` with ``rerank: true``), through this queue like any rerank request."""
        result = await self.score([(query, t) for t in texts])
        return [float(x) for x in result.scores]

    async def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        instruction: str | None = None,
        long_text: RerankLongText | None = None,
        bulk: bool = False,
    ) -> tuple[list[RankedDocument], int]:
        """``documents`` ranked against ``query``, best first (ties: the earlier document), at
        most ``top_n``; and the tokens the model ran."""
        check_pairs_input(query, documents, max_documents=self.settings.max_client_batch_size)
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise InputError(f"top_n must be an integer >= 1, not {top_n!r}.", param="top_n")
        result = await self.score(
            [(query, d) for d in documents], instruction=instruction, long_text=long_text, bulk=bulk
        )
        # By the raw logit: the sigmoid rounds large logits to the same 1.0 in float32.
        order = sorted(range(len(documents)), key=lambda i: (-float(result.raw[i]), i))
        ranked = [
            RankedDocument(
                index=i,
                score=float(result.scores[i]),
                raw_score=float(result.raw[i]),
                document=documents[i] if return_documents else None,
            )
            for i in order[: top_n or len(order)]
        ]
        return ranked, result.prompt_tokens
