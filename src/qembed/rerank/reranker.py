"""The public reranker: ``Reranker("Qwen/Qwen3-Reranker-0.6B").rank(query, documents)``.

One class for both kinds (``rerank/loading.py``). Like ``Embedder`` a call runs in two stages
that the server's queue also uses one by one, so that pairs of many requests share batches:

1. ``prepare``: validate, build each pair's model row (Qwen3: the model card's prompt; a
   cross-encoder: the tokenizer's pair encoding), apply ``long_text``;
2. ``run``: one padded batch of rows -> one raw logit per row (``relevance`` = sigmoid).

Qwen3-Reranker rows are padded on the left and read at the last position, with position ids
counted from the attention mask so that a row's score does not depend on the rows it is
batched with; only the ``yes``/``no`` rows of the output embedding are multiplied (the card
computes the full 151k-word logits of every position and keeps two numbers).
Torch only: the ONNX and OpenVINO backends are embedding exports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from qembed.encode.batching import pad_windows, plan_batches
from qembed.encode.windows import Window
from qembed.errors import InputError, InputTooLong, ModelOutputError, UnsupportedModel
from qembed.model.sources import ResolvedModel, resolve_model
from qembed.rerank import prompts
from qembed.rerank.loading import detect_kind, hub_id, load_model, yes_no_ids
from qembed.rerank.protocol import (
    PairScorer,
    PreparedPairs,
    RankedDocument,
    RerankKind,
    RerankLongText,
    RerankModelInfo,
    relevance,
)
from qembed.settings import Settings

log = logging.getLogger(__name__)

# Rows per model batch and padded tokens per batch in ``score`` (the server packs its own).
DEFAULT_BATCH_ROWS = 32
DEFAULT_BATCH_TOKENS = 16384
# Cross-encoders whose tokenizer states no usable limit (transformers' 1e30 sentinel).
_NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class PairWindow(Window):
    """A cross-encoder row: a ``Window`` plus the tokenizer's segment ids (BERT's token_type_ids;
    empty for models without them). Still a ``Window`` for the queue (``len(w.ids)``, ``owner``)."""

    type_ids: tuple[int, ...] = ()


def _check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every pair a (non-empty query, non-empty document) of strings; ``InputError`` names the first bad one."""
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise InputError("pairs must be a list of (query, document) string pairs.", param="pairs")
    if not pairs:
        raise InputError("No pairs to score: give at least one (query, document) pair.", param="pairs")
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InputError(f"pairs[{i}] must be a (query, document) pair of strings.", param="pairs")
        query, doc = pair
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"pairs[{i}]: the query must be a non-empty string.", param="query")
        if not isinstance(doc, str):
            raise InputError(
                f"documents[{i}] is a {type(doc).__name__}, not a string: send the document's text.",
                param="documents",
            )
        if not doc.strip():
            raise InputError(
                f"documents[{i}] is empty: send text to rank, or leave it out.", param="documents"
            )
        out.append((query, doc))
    return out


class Reranker:
    """Load a reranker once; score (query, document) pairs the way its reference does."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        settings: Settings | None = None,
        kind: RerankKind | None = None,
        **overrides: Any,
    ) -> None:
        base = settings or Settings()
        updates = dict(overrides)
        if model is not None:
            updates["rerank_model"] = os.fspath(model)
        self.settings = base.overlay(**updates)  # validated before anything loads
        s = self.settings
        if not s.rerank_model:
            raise InputError(
                "No reranker named: pass one (Reranker('Qwen/Qwen3-Reranker-0.6B')) or set --rerank-model / "
                "QEMBED_RERANK_MODEL.",
                param="rerank_model",
            )
        if s.backend not in ("torch", "auto"):
            raise UnsupportedModel(
                f"Rerankers run on the torch backend only (backend={s.backend!r} was asked); drop --backend for them."
            )
        name = s.rerank_model
        self.resolved: ResolvedModel = resolve_model(hub_id(name), source=s.source, revision=s.revision)
        folder = self.resolved.path
        self.kind: RerankKind = detect_kind(folder, self.resolved.model_id, kind)

        import torch
        from transformers import AutoTokenizer

        from qembed.model.backends.hardware import available_cores
        from qembed.model.backends.torch_backend import _DTYPES, checkpoint_dtype, pick_device, pick_dtype

        side = "left" if self.kind == "qwen3-reranker" else "right"
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side=side)
        self.padding_side = side
        self.device = pick_device(s.device)
        self.dtype = pick_dtype(s.dtype, self.device, checkpoint_dtype(folder))
        if self.device == "cpu":
            torch.set_num_threads(s.threads or available_cores())
        self.model = load_model(folder, self.kind, device=self.device, dtype=_DTYPES[self.dtype])
        self.pad_id = int(
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        self.default_instruction: str | None = None
        if self.kind == "qwen3-reranker":
            self.yes_id, self.no_id = yes_no_ids(self.tokenizer, self.resolved.model_id)
            self.prefix_ids = list(self.tokenizer.encode(prompts.PREFIX, add_special_tokens=False))
            self.suffix_ids = list(self.tokenizer.encode(prompts.SUFFIX, add_special_tokens=False))
            self.default_instruction = s.rerank_instruction or prompts.DEFAULT_INSTRUCTION
            own_limit = prompts.MAX_LENGTH
            weight = self.model.get_output_embeddings().weight
            # the two rows of the output embedding that matter: [yes, no]
            self._head = weight[[self.yes_id, self.no_id]].detach().clone()
            minimum = len(self.prefix_ids) + len(self.suffix_ids) + 8
        else:
            limit = int(getattr(self.tokenizer, "model_max_length", 0) or 0)
            positions = int(getattr(self.model.config, "max_position_embeddings", 512) or 512)
            own_limit = limit if 0 < limit < _NO_LIMIT else positions
            minimum = self.tokenizer.num_special_tokens_to_add(pair=True) + 2
        self.max_length = s.rerank_max_length or own_limit
        positions_max = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        if positions_max and self.max_length > positions_max:
            raise InputError(
                f"rerank_max_length={self.max_length} is more than {self.resolved.model_id} can read "
                f"({positions_max} positions); use at most {positions_max}.",
                param="rerank_max_length",
            )
        if self.max_length < minimum:
            raise InputError(
                f"rerank_max_length={self.max_length} leaves no room for a query and a document "
                f"(this model needs at least {minimum} tokens for its prompt and special tokens).",
                param="rerank_max_length",
            )
        self.long_text: RerankLongText = "error" if s.long_text == "error" else "truncate"
        self.info = RerankModelInfo(
            model_id=self.resolved.model_id,
            kind=self.kind,
            max_length=self.max_length,
            default_instruction=self.default_instruction,
            device=self.device,
            dtype=self.dtype,
        )
        log.info("loaded reranker %s (%s) on %s/%s", self.info.model_id, self.kind, self.device, self.dtype)

    def __repr__(self) -> str:
        i = self.info
        return f"Reranker({i.model_id!r}, kind={i.kind}, max_length={i.max_length}, {i.device}/{i.dtype})"

    # -- stage 1: prepare -------------------------------------------------------------------
    def _instruction(self, instruction: str | None) -> str | None:
        if self.kind == "cross-encoder":
            if instruction is not None:
                raise InputError(
                    f"{self.info.model_id} is a cross-encoder: it takes no instruction (only Qwen3-Reranker does); "
                    "leave instruction out.",
                    param="instruction",
                )
            return None
        if instruction is None:
            return self.default_instruction
        if not isinstance(instruction, str) or not instruction.strip():
            raise InputError(
                "instruction must be a non-empty string (or left out for the default).", param="instruction"
            )
        return instruction

    def _qwen3_windows(
        self, pairs: list[tuple[str, str]], instruction: str, long_text: RerankLongText
    ) -> PreparedPairs:
        bodies = [prompts.body(instruction, q, d) for q, d in pairs]
        encoded = self.tokenizer(bodies, add_special_tokens=True, truncation=False)["input_ids"]
        room = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        heads: dict[str, int] = {}
        prepared = PreparedPairs(windows=[])
        for i, ((query, _), ids) in enumerate(zip(pairs, encoded, strict=True)):
            ids = list(ids)
            cut = len(ids) > room
            if cut:
                total = len(ids) + len(self.prefix_ids) + len(self.suffix_ids)
                if long_text == "error":
                    raise InputTooLong(
                        f"documents[{i}] with its query and the reranker prompt has {total} tokens; the limit is "
                        f"{self.max_length}. Shorten the document, or send long_text='truncate' (the document's "
                        "end is cut).",
                        param="documents",
                    )
                if query not in heads:
                    heads[query] = len(
                        self.tokenizer.encode(prompts.head(instruction, query), add_special_tokens=False)
                    )
                if heads[query] >= room:
                    raise InputError(
                        f"the query and instruction alone take {heads[query] + len(self.prefix_ids) + len(self.suffix_ids)} "
                        f"of the {self.max_length}-token reranker window, leaving no room for a document: use a "
                        "shorter query or instruction (or a larger --rerank-max-length).",
                        param="query",
                    )
                ids = ids[:room]  # the card's truncation='longest_first' of one sequence: the end goes
            row = self.prefix_ids + ids + self.suffix_ids
            prepared.windows.append(Window(row, i, len(row)))
            prepared.tokens.append(len(row))
            prepared.truncated.append(cut)
        return prepared

    def _pair_windows(self, pairs: list[tuple[str, str]], long_text: RerankLongText) -> PreparedPairs:
        queries = [q for q, _ in pairs]
        docs = [d for _, d in pairs]
        untruncated = self.tokenizer(queries, docs, truncation=False)
        full = untruncated["input_ids"]
        long = [i for i, ids in enumerate(full) if len(ids) > self.max_length]
        if long and long_text == "error":
            i = long[0]
            raise InputTooLong(
                f"documents[{i}] with its query has {len(full[i])} tokens; the limit is {self.max_length}. Shorten it, "
                "or send long_text='truncate'.",
                param="documents",
            )
        # longest_first, as sentence-transformers' CrossEncoder tokenizes (only when something is too long)
        source = (
            self.tokenizer(queries, docs, truncation=True, max_length=self.max_length)
            if long
            else untruncated
        )
        types = source.get("token_type_ids")
        prepared = PreparedPairs(windows=[])
        for i, ids in enumerate(source["input_ids"]):
            row = list(ids)
            type_ids = tuple(types[i]) if types is not None else ()
            prepared.windows.append(PairWindow(row, i, len(row), type_ids=type_ids))
            prepared.tokens.append(len(row))
            prepared.truncated.append(len(full[i]) > self.max_length)
        return prepared

    def prepare(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        long_text: RerankLongText = "truncate",
        max_doc_tokens: int | None = None,
    ) -> PreparedPairs:
        """Validate and tokenize; one ``Window`` per pair (``owner`` = the pair's index).

        ``max_doc_tokens`` first cuts each document after its first N tokens (Cohere v2's
        ``max_tokens_per_doc``). Too long for the window then: ``truncate`` cuts the document's
        end (Qwen3: the prompt, instruction, query and suffix are kept; a cross-encoder follows
        its tokenizer's ``longest_first`` as sentence-transformers does), ``error`` raises
        ``InputTooLong`` with the count and limit."""
        checked = _check_pairs(pairs)
        if max_doc_tokens is not None:
            checked = self._cut_documents(checked, max_doc_tokens)
        if long_text not in ("truncate", "error"):
            raise InputError(
                f"long_text must be 'truncate' or 'error' for reranking, not {long_text!r}.",
                param="long_text",
            )
        resolved = self._instruction(instruction)
        if self.kind == "qwen3-reranker":
            return self._qwen3_windows(checked, cast(str, resolved), long_text)
        return self._pair_windows(checked, long_text)

    def _cut_documents(self, pairs: list[tuple[str, str]], max_tokens: int) -> list[tuple[str, str]]:
        """Each document up to the end of its ``max_tokens``-th token (this model's tokenizer, no
        special tokens), cut in the text at that token's last character."""
        if max_tokens < 1:
            raise InputError(
                f"max_tokens_per_doc must be at least 1, not {max_tokens}.", param="max_tokens_per_doc"
            )
        docs = [d for _, d in pairs]
        offsets = self.tokenizer(docs, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        return [
            (q, d if len(spans) <= max_tokens else d[: spans[max_tokens - 1][1]])
            for (q, d), spans in zip(pairs, offsets, strict=True)
        ]

    def count_tokens(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None) -> list[int]:
        """Tokens each pair would cost untruncated (prompt and special tokens included), for limits."""
        checked = _check_pairs(pairs)
        resolved = self._instruction(instruction)
        if self.kind == "qwen3-reranker":
            extra = len(self.prefix_ids) + len(self.suffix_ids)
            bodies = [prompts.body(cast(str, resolved), q, d) for q, d in checked]
            return [len(ids) + extra for ids in self.tokenizer(bodies, truncation=False)["input_ids"]]
        ids = self.tokenizer([q for q, _ in checked], [d for _, d in checked], truncation=False)["input_ids"]
        return [len(row) for row in ids]

    # -- stage 2: run --------------------------------------------------------------------------
    def run(self, windows: Sequence[Window]) -> np.ndarray:
        """One model batch: rows -> raw logits, float32, shape ``(len(windows),)``, in order."""
        import torch

        if not windows:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            raw = self._forward(torch, windows)
        if not np.isfinite(raw).all():
            raise ModelOutputError(
                f"{self.info.model_id} produced non-finite scores ({self.dtype} on {self.device}); try --dtype float32."
            )
        return raw

    def _forward(self, torch: Any, windows: Sequence[Window]) -> np.ndarray:
        ids_np, mask_np, _ = pad_windows(windows, pad_id=self.pad_id, side=self.padding_side)
        ids = torch.from_numpy(ids_np).to(self.device)
        mask = torch.from_numpy(mask_np).to(self.device)
        if self.kind == "qwen3-reranker":
            # positions from the mask: a left-padded row sees the positions it has alone
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            states = self.model.model(
                input_ids=ids, attention_mask=mask, position_ids=positions
            ).last_hidden_state
            logits = states[:, -1, :] @ self._head.T  # [n, 2]: yes, no
            raw = (logits[:, 0].float() - logits[:, 1].float()).cpu().numpy()
        else:
            kwargs: dict[str, Any] = {}
            pair_windows = [w for w in windows if isinstance(w, PairWindow) and w.type_ids]
            if len(pair_windows) == len(windows):
                types = np.zeros_like(ids_np)
                for row, w in enumerate(pair_windows):
                    types[row, : len(w.type_ids)] = w.type_ids  # right padded
                kwargs["token_type_ids"] = torch.from_numpy(types).to(self.device)
            out = self.model(input_ids=ids, attention_mask=mask, **kwargs).logits
            raw = out[:, 0].float().cpu().numpy()
        return np.asarray(raw, dtype=np.float32)

    # -- the Python API -----------------------------------------------------------------------
    def _run_all(self, windows: list[Window], batch_size: int, max_batch_tokens: int) -> np.ndarray:
        out = np.zeros(len(windows), dtype=np.float32)
        for batch in plan_batches(
            [len(w.ids) for w in windows], max_tokens=max_batch_tokens, max_rows=batch_size
        ):
            out[batch] = self.run([windows[i] for i in batch])
        return out

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        instruction: str | None = None,
        raw: bool = False,
        long_text: RerankLongText | None = None,
        batch_size: int = DEFAULT_BATCH_ROWS,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> np.ndarray:
        """One score per pair, float32: relevance in [0, 1] (sigmoid of the logit; Qwen3: the
        probability of "yes"), or the raw logit with ``raw=True``."""
        if batch_size < 1 or max_batch_tokens < 1:
            raise InputError("batch_size and max_batch_tokens must be at least 1.", param="batch_size")
        prepared = self.prepare(pairs, instruction=instruction, long_text=long_text or self.long_text)
        logits = self._run_all(prepared.windows, batch_size, max_batch_tokens)
        return logits if raw else relevance(logits)

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        return_documents: bool = False,
        long_text: RerankLongText | None = None,
    ) -> list[RankedDocument]:
        """``documents`` sorted by relevance to ``query`` (highest first, ties by index);
        ``top_n`` keeps the best n; ``return_documents`` puts each text in its result."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("query must be a non-empty string.", param="query")
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise InputError("documents must be a list of strings.", param="documents")
        if not documents:
            raise InputError("documents is empty: give at least one document to rank.", param="documents")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise InputError(f"top_n must be a positive integer, not {top_n!r}.", param="top_n")
        logits = self.score(
            [(query, d) for d in documents], instruction=instruction, raw=True, long_text=long_text
        )
        scores = relevance(logits)
        order = sorted(range(len(documents)), key=lambda i: (-float(logits[i]), i))
        if top_n is not None:
            order = order[:top_n]
        return [
            RankedDocument(
                index=i,
                score=float(scores[i]),
                raw_score=float(logits[i]),
                document=documents[i] if return_documents else None,
            )
            for i in order
        ]


def _is_a_pair_scorer(reranker: Reranker) -> PairScorer:
    """Never called: mypy checks here that ``Reranker`` keeps the server's contract (protocol.py)."""
    return reranker
