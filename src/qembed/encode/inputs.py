"""What an encode call embeds: the one parser of the four input shapes.

``input`` may be a text, a list of texts, one tokenized input (a list of token ids) or
several (a list of lists). ``parse_inputs`` is the only place that tells them apart and
says what is wrong with a malformed one; the Python API calls it directly and every HTTP
request body runs it as its pydantic validator (``qembed.server.schemas.Input``), so the
same mistake gets the same message in both.

Each parsed item remembers its position in the caller's request: when the embedding cache
answers some inputs itself and sends only the rest to the model, an error about one of the
rest still names the caller's ``input[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qembed.errors import InputError

SHAPES = "a string, a list of strings, a list of token ids, or a list of lists of token ids"

Item = str | tuple[int, ...]


@dataclass(frozen=True)
class Inputs:
    """The inputs of one call: all texts or all token id tuples, in request order."""

    items: tuple[Item, ...]
    tokenized: bool  # token ids (True) or texts (False)
    single: bool = False  # a bare string: the Python API returns one vector, not a matrix
    positions: tuple[int, ...] = ()  # each item's index in the caller's request
    checked: bool = False  # the model's checks (vocabulary, foreign ids) ran: ``Embedder.parse``

    def __post_init__(self) -> None:
        if not self.positions:
            object.__setattr__(self, "positions", tuple(range(len(self.items))))

    def __len__(self) -> int:
        return len(self.items)

    def label(self, i: int) -> str:
        """How an error names item ``i``: the caller's index."""
        return f"input[{self.positions[i]}]"

    def subset(self, indices: Sequence[int]) -> Inputs:
        """Some of the items (e.g. those the cache did not have), numbered as the caller numbered them."""
        return Inputs(
            tuple(self.items[i] for i in indices),
            self.tokenized,
            False,
            tuple(self.positions[i] for i in indices),
            self.checked,
        )

    @property
    def texts(self) -> list[str]:
        if self.tokenized:
            raise TypeError("these inputs are token ids, not texts")
        return [item for item in self.items if isinstance(item, str)]

    @property
    def token_ids(self) -> list[tuple[int, ...]]:
        if not self.tokenized:
            raise TypeError("these inputs are texts, not token ids")
        return [item for item in self.items if isinstance(item, tuple)]


def kind_of(value: Any) -> str:
    """A value's kind as a JSON user reads it ("a string", "a number", "a list", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if _is_int(value) or isinstance(value, float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    if _is_list(value):
        return "a list"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iu"


def _is_list(value: Any) -> bool:
    if type(value).__module__ == "numpy" and getattr(value, "ndim", 0) >= 1:
        return True  # an array of token ids
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def parse_inputs(value: Any) -> Inputs:
    """Classify and check ``value``; raises ``InputError`` (param ``input``) naming the first wrong item."""
    if isinstance(value, Inputs):
        return value
    if isinstance(value, str):
        if not value:
            raise InputError(
                "input[0] is an empty string; every input needs at least one character.", param="input"
            )
        return Inputs((value,), tokenized=False, single=True)
    if not _is_list(value):
        raise InputError(f"input must be {SHAPES}; got {kind_of(value)}.", param="input")
    items = list(value)
    if not items:
        raise InputError("input is empty; send at least one text.", param="input")
    first = items[0]
    if isinstance(first, str):
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise InputError(
                    f"input[{i}] is {kind_of(item)}; a list input holds only strings (or only token ids, "
                    "or only lists of token ids).",
                    param="input",
                )
            if not item:
                raise InputError(
                    f"input[{i}] is an empty string; every input needs at least one character.", param="input"
                )
        return Inputs(tuple(items), tokenized=False)
    if _is_int(first):
        for i, item in enumerate(items):
            if not _is_int(item):
                raise InputError(
                    f"input[{i}] is {kind_of(item)}; a list of token ids holds only integers.", param="input"
                )
        return Inputs((tuple(int(t) for t in items),), tokenized=True)
    if _is_list(first):
        out: list[Item] = []
        for i, item in enumerate(items):
            if not _is_list(item):
                raise InputError(
                    f"input[{i}] is {kind_of(item)}; a list of token lists holds only lists of integers.",
                    param="input",
                )
            for j, token in enumerate(item):
                if not _is_int(token):
                    raise InputError(
                        f"input[{i}][{j}] is {kind_of(token)}; token ids are integers.", param="input"
                    )
            if not item:
                raise InputError(f"input[{i}] is an empty token list.", param="input")
            out.append(tuple(int(t) for t in item))
        return Inputs(tuple(out), tokenized=True)
    raise InputError(f"input[0] is {kind_of(first)}; input must be {SHAPES}.", param="input")


def check_vocabulary(inputs: Inputs, vocab_size: int) -> None:
    """Token ids must index the model's embedding table."""
    if not inputs.tokenized:
        return
    for i, ids in enumerate(inputs.token_ids):
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise InputError(
                f"{inputs.label(i)} has token id {bad}, outside the vocabulary [0, {vocab_size}).",
                param="input",
            )
