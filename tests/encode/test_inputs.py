"""parse_inputs: the one parser of the four input shapes (Python API and request bodies)."""

from __future__ import annotations

import numpy as np
import pytest

from qembed.encode.inputs import Inputs, check_vocabulary, parse_inputs
from qembed.errors import InputError


def test_shapes() -> None:
    text = parse_inputs("x")
    assert text.items == ("x",) and text.single and not text.tokenized
    assert parse_inputs(["a", "b"]).items == ("a", "b")
    assert parse_inputs([1, 2, 3]).items == ((1, 2, 3),) and parse_inputs([1, 2]).tokenized
    assert parse_inputs([[1, 2], [3]]).items == ((1, 2), (3,))
    assert parse_inputs(("a",)).items == ("a",)  # any sequence
    assert parse_inputs(np.array([4, 5])).items == ((4, 5),)  # numpy ids are integers


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ([], "input is empty"),
        (5, "input must be a string"),
        (None, "got null"),
        ("", "input[0] is an empty string"),
        (["a", "b", ""], "input[2] is an empty string"),
        (["a", 1], "input[1] is a number"),
        ([1, "a"], "input[1] is a string"),
        ([True, 1], "input[0] is a boolean"),  # JSON true is not token id 1
        ([1, True], "input[1] is a boolean"),
        ([[1, "x"]], "input[0][1] is a string"),
        ([[1], 2], "input[1] is a number"),
        ([[]], "input[0] is an empty token list"),
        ([1.5, 2], "input[0] is a number"),
        ([{"a": 1}], "input[0] is an object"),
    ],
)
def test_mistakes_name_the_item(value: object, needle: str) -> None:
    with pytest.raises(InputError) as info:
        parse_inputs(value)
    assert needle in info.value.message and info.value.param == "input"


def test_subset_keeps_the_callers_numbering() -> None:
    parsed = parse_inputs(["a", "b", "c", "d"])
    part = parsed.subset([1, 3])
    assert part.items == ("b", "d") and part.positions == (1, 3) and part.label(1) == "input[3]"
    assert len(part) == 2 and not part.single


def test_vocabulary_check_uses_the_callers_index() -> None:
    parsed = parse_inputs([[5], [1], [70000]]).subset([2])
    with pytest.raises(InputError, match=r"input\[2\] has token id 70000"):
        check_vocabulary(parsed, 1000)
    check_vocabulary(parse_inputs(["text"]), 10)  # texts: nothing to check
    assert isinstance(parse_inputs(parsed), Inputs) and parse_inputs(parsed) is parsed
