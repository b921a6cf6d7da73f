"""Search's second stage: a ``qembed.rerank.Reranker`` as the searcher's re-rank hook.

The searcher takes any ``(query, candidates) -> scores`` callable (``searcher.Reranker``), so
that tests and callers can plug in their own; this module turns a loaded reranker model into
one. A candidate is scored on what the embedder saw (``Chunk.embed_text``: the title and
heading trail, then the body), and ``rerank_score`` is the reranker's relevance in [0, 1]
(sigmoid of its logit; Qwen3-Reranker: the probability of "yes").
"""

from __future__ import annotations

from collections.abc import Sequence

from qembed.errors import InputError
from qembed.rerank.reranker import Reranker as RerankModel
from qembed.search.searcher import Reranker as RerankHook
from qembed.search.searcher import SearchResult


def rerank_hook(reranker: RerankModel, *, instruction: str | None = None) -> RerankHook:
    """The searcher's hook for ``reranker`` (documents: each candidate's ``embed_text``)."""

    def hook(query: str, results: list[SearchResult]) -> Sequence[float]:
        pairs = [(query, r.chunk.embed_text) for r in results]
        return [float(s) for s in reranker.score(pairs, instruction=instruction)]

    return hook


def as_hook(rerank: RerankModel | RerankHook | None, *, instruction: str | None = None) -> RerankHook | None:
    """What ``SearchIndex.search(rerank=...)`` accepts: a loaded ``Reranker``, a hook, or None."""
    if rerank is None:
        if instruction is not None:
            raise InputError("rerank_instruction needs a reranker (rerank=...).", param="rerank_instruction")
        return None
    if isinstance(rerank, RerankModel):
        return rerank_hook(rerank, instruction=instruction)
    if callable(rerank):
        if instruction is not None:
            raise InputError(
                "rerank_instruction applies to a Reranker model, not to a re-rank function.",
                param="rerank_instruction",
            )
        return rerank
    raise InputError(
        f"rerank must be a qembed.Reranker or a (query, results) -> scores function, not {type(rerank).__name__}.",
        param="rerank",
    )
