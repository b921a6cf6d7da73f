"""Qwen3-Reranker's prompt, exactly as its model card (Qwen/Qwen3-Reranker-0.6B README) writes it.

Why this file exists: the public trackers are full of Qwen3-Reranker deployments that score
near-randomly or return 0.5 for everything because one of these strings, the ``<think>``
block of the suffix or the yes/no read-out was changed. Nothing here may be "tidied up".

The card builds each model row as ``prefix_ids + tokenizer(body)[:budget] + suffix_ids`` where
the prefix and suffix are tokenized apart (``add_special_tokens=False``), the body with the
tokenizer's defaults, ``budget = max_length - len(prefix_ids) - len(suffix_ids)``, rows are
padded on the LEFT and the relevance is ``softmax([logit_no, logit_yes])[yes]`` of the last
position, which equals ``sigmoid(logit_yes - logit_no)``.
"""

from __future__ import annotations

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MAX_LENGTH = 8192  # the card's max_length: tokens of one row, prefix and suffix included
YES, NO = "yes", "no"  # the tokens whose last-position logits give the score


def body(instruction: str, query: str, document: str) -> str:
    """The card's ``format_instruction``: what goes between the prefix and the suffix."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def head(instruction: str, query: str) -> str:
    """The body up to the document (no trailing space: the byte-level pre-tokenizer puts the
    space in front of the document's first word). Its token count is what truncation keeps."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"
