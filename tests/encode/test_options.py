"""EncodeOptions: the one definition of the encode options, and how they resolve."""

from __future__ import annotations

import json

import pytest

from qembed.encode.options import EncodeDefaults, EncodeOptions
from qembed.errors import InputError
from qembed.model.pipeline import PipelineSpec

SPEC = PipelineSpec(
    model_type="qwen3",
    hidden_size=64,
    pooling="lasttoken",
    normalize=True,
    prompts={"query": "Q: "},
    supports_mrl=True,
)
DEFAULTS = EncodeDefaults(model_id="tiny", long_text="truncate", truncation_side="left")


def test_unknown_option_suggests_the_right_name() -> None:
    with pytest.raises(InputError, match="Did you mean 'prompt_name'") as info:
        EncodeOptions.of(promt_name="query")
    assert info.value.param == "promt_name"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"long_text": "drop"}, "long_text"),
        ({"dimensions": 32.0}, "dimensions"),
        ({"normalize": "yes"}, "normalize"),
        ({"input_type": "doc"}, "input_type"),
    ],
)
def test_bad_values_are_refused_with_the_field(kwargs: dict, param: str) -> None:
    with pytest.raises(InputError) as info:
        EncodeOptions.of(**kwargs)
    assert info.value.param == param and param in info.value.message


def test_resolve_applies_defaults_and_prompt() -> None:
    resolved = EncodeOptions.of(prompt_name="query", dimensions=32).resolve(SPEC, DEFAULTS)
    assert (resolved.prefix, resolved.dimensions, resolved.normalize) == ("Q: ", 32, True)
    assert (resolved.long_text, resolved.truncation_side) == ("truncate", "left")  # the configured defaults
    assert EncodeOptions.of(dimensions=64).resolve(SPEC, DEFAULTS).dimensions is None  # the full size


def test_key_is_the_same_for_a_task_and_the_prompt_it_stands_for() -> None:
    by_task = EncodeOptions.of(task="sts").resolve(SPEC, DEFAULTS)
    by_prompt = EncodeOptions.of(prompt=by_task.prefix).resolve(SPEC, DEFAULTS)
    assert by_task.key() == by_prompt.key()
    assert json.loads(by_task.key())[0].startswith("Instruct: ")
    assert by_task.key() != EncodeOptions.of(task="sts", normalize=False).resolve(SPEC, DEFAULTS).key()


def test_given_lists_only_what_was_set() -> None:
    assert EncodeOptions.of(task="retrieval", input_type="document").given() == {
        "task": "retrieval",
        "input_type": "document",
    }
    assert set(EncodeOptions.names()) == {
        "prompt_name",
        "prompt",
        "instruction",
        "task",
        "input_type",
        "dimensions",
        "normalize",
        "long_text",
        "truncation_side",
        "max_tokens",
    }
