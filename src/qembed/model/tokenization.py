"""Text -> token ids, exactly as the reference tokenizer does it, plus the special tokens.

We tokenize ``prompt + text`` *without* special tokens and add the model's head/tail
special tokens ourselves. That lets the long-text layer cut windows out of the content
and give every window the same prompt and special tokens, while short inputs get exactly
the ids ``tokenizer(prompt + text)`` gives.

Last-token models must end with ``<|endoftext|>`` (151643 for Qwen3): the real Qwen3
tokenizer appends it through its post-processor; an old revision (or a folder rebuilt from
vocab.json + merges.txt) does not, and then we append it and log that once. We never
apply a chat template.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

from qembed.model.pipeline import PipelineSpec

log = logging.getLogger(__name__)
_PROBE = "a"


@dataclass(frozen=True)
class SpecialTokens:
    head: tuple[int, ...]
    tail: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.head) + len(self.tail)


class TextTokenizer:
    """The model's tokenizer with the bookkeeping the engine needs."""

    def __init__(self, folder: Path, spec: PipelineSpec) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.spec = spec
        config = json.loads((folder / "config.json").read_text())
        self.vocab_size = int(config.get("vocab_size") or len(self.tokenizer))
        self.pad_id = self._pad_id(config)
        self.special = self._special_tokens(config)

    # -- setup ----------------------------------------------------------------------------
    def _pad_id(self, config: dict) -> int:
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        eos = config.get("eos_token_id")
        return int(eos[0] if isinstance(eos, list) else eos or 0)

    def _special_tokens(self, config: dict) -> SpecialTokens:
        full = self.tokenizer(_PROBE, add_special_tokens=True)["input_ids"]
        bare = self.tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
        start = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), 0)
        head, tail = tuple(full[:start]), tuple(full[start + len(bare) :])
        if self.spec.pooling == "lasttoken":
            eos = config.get("eos_token_id")
            eos_id = int(eos[0] if isinstance(eos, list) else eos if eos is not None else self.pad_id)
            if not tail or tail[-1] != eos_id:
                log.warning(
                    "the tokenizer in this folder does not append the end-of-text token %d that last-token "
                    "pooling needs (an old revision); qembed appends it to every input.",
                    eos_id,
                )
                tail = tail + (eos_id,)
        return SpecialTokens(head=head, tail=tail)

    # -- use ------------------------------------------------------------------------------
    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens, no truncation."""
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    @lru_cache(maxsize=64)  # noqa: B019 - a handful of prompts per process
    def prompt_ids(self, prompt: str) -> tuple[int, ...]:
        if not prompt:
            return ()
        return tuple(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def wrap(self, ids: list[int]) -> list[int]:
        """Add the model's special tokens around content ids."""
        return [*self.special.head, *ids, *self.special.tail]

    def is_wrapped(self, ids: list[int]) -> bool:
        head, tail = self.special.head, self.special.tail
        return (
            len(ids) >= len(head) + len(tail)
            and tuple(ids[: len(head)]) == head
            and (not tail or tuple(ids[-len(tail) :]) == tail)
        )

    def is_canonical(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` are what this tokenizer gives for their own text (decode, re-encode,
        compare). Ids from another tokenizer (tiktoken's, sent by LangChain's
        OpenAIEmbeddings) decode to *some* text here but almost never back to themselves; a
        fully wrapped input (``/tokenize`` output) is checked without its special tokens."""
        content = list(ids)
        if self.is_wrapped(content):
            content = content[len(self.special.head) : len(content) - len(self.special.tail)]
        text = self.tokenizer.decode(content, clean_up_tokenization_spaces=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) == content

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        # one sequence of ids decodes to one string (str | list[str] covers batches)
        return cast(str, self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))
