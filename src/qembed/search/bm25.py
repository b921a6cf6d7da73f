"""Terms for BM25: one tokenization for documents and queries, in every store.

Why our own terms instead of the store's tokenizer: SQLite FTS5 and Milvus would each cut
text differently, and neither segments Chinese into words (FTS5's unicode61 treats a run of
Han characters as one token, so a query word inside a sentence never matches). So both
stores index the space-joined output of ``terms()`` and split it on spaces only:

- runs of Han characters are segmented with jieba (search mode: long words also give their
  sub-words, which is what a query needs to match part of a compound);
- Latin/other words are lowercased; code identifiers give their parts *and* the joined
  form, so ``--max-surge``, ``max_surge``, ``maxSurge`` and ``MaxSurge`` all yield
  ``max``, ``surge`` and ``maxsurge``: an exact identifier query scores the joined term,
  which is rare and so weighs heavily in BM25;
- a short list of English function words is dropped: they carry no ranking signal and
  their postings are the longest, which is what makes an OR query slow.

The ranking itself is the stores' BM25 (FTS5 ``bm25()``, Milvus' BM25 function), both
Okapi BM25 with k1=1.2, b=0.75.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"(?P<han>[{_HAN}]+)|(?P<word>[^\W_{_HAN}]+(?:[_\-.'][^\W_{_HAN}]+)*)")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_A-Za-z]+")
_SEPARATORS = re.compile(r"[_\-.']")

STOPWORDS = frozenset(
    "a an and are as at be but by for from has have if in into is it its of on or that the their then there these "
    "this to was were will with".split()
)

MAX_TERM_CHARS = 64


@lru_cache(maxsize=1)
def _jieba():  # noqa: ANN202 - jieba has no types
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def _word_terms(word: str) -> list[str]:
    parts: list[str] = []
    for piece in _SEPARATORS.split(word):
        parts.extend(p.lower() for p in _CAMEL.findall(piece) or [piece])
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return [word.lower()]
    joined = "".join(parts)
    return [joined, *parts]


def terms(text: str) -> list[str]:
    """The BM25 terms of a text (documents and queries alike)."""
    out: list[str] = []
    append = out.append
    for han, word in _TOKEN.findall(text):
        if han:
            out.extend(t for t in _jieba().cut_for_search(han) if t.strip())
            continue
        # Fast path (most words): one lowercase or capitalised alphanumeric word is its own term.
        if word.isalnum() and (
            word.islower() or word.isdigit() or (word[0].isupper() and word[1:].islower())
        ):
            term = word.lower()
            if term not in STOPWORDS and len(term) <= MAX_TERM_CHARS:
                append(term)
            continue
        for term in _word_terms(word):
            if term not in STOPWORDS and len(term) <= MAX_TERM_CHARS:
                append(term)
    return out


def query_terms(text: str) -> list[str]:
    """Distinct terms of a query, in order (repeating a term adds nothing to an OR query)."""
    return list(dict.fromkeys(terms(text)))
