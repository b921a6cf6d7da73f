"""Instructions: prompt_name, a free instruction, task presets; exact ids, clear errors."""

from __future__ import annotations

import pytest

from qembed import Embedder
from qembed.errors import InputError
from qembed.model.instructions import TASKS, format_instruction, resolve_prompt
from qembed.model.pipeline import PipelineSpec

TEXT = "What is the capital of China?"
QWEN = PipelineSpec(model_type="qwen3", hidden_size=64, pooling="lasttoken", normalize=True, prompts={"query": "Q:", "document": ""})
BERT = PipelineSpec(model_type="bert", hidden_size=384, pooling="mean", normalize=True)


def _ref_ids(embedder: Embedder, text: str) -> list[int]:
    """What the model's own tokenizer gives for the full string (the reference)."""
    return embedder.tokenizer.tokenizer(text)["input_ids"]


def test_free_instruction_is_formatted_exactly(tiny_embedder: Embedder) -> None:
    assert format_instruction("X") == "Instruct: X\nQuery:"
    ids = tiny_embedder.tokenize(TEXT, instruction="X")[0]
    assert ids == _ref_ids(tiny_embedder, "Instruct: X\nQuery:" + TEXT)
    assert ids[-1] == 151643
    # Surrounding whitespace of the instruction is not part of the format.
    assert tiny_embedder.tokenize(TEXT, instruction="  X \n")[0] == ids


def test_prompt_name_uses_the_models_prompt(tiny_embedder: Embedder) -> None:
    query = tiny_embedder.prompts["query"]
    assert tiny_embedder.tokenize(TEXT, prompt_name="query")[0] == _ref_ids(tiny_embedder, query + TEXT)
    assert tiny_embedder.tokenize(TEXT, prompt_name="document")[0] == _ref_ids(tiny_embedder, TEXT)
    assert tiny_embedder.tokenize(TEXT, prompt="raw: ")[0] == _ref_ids(tiny_embedder, "raw: " + TEXT)


def test_retrieval_preset_queries_get_the_instruction_documents_none(tiny_embedder: Embedder) -> None:
    instruction = TASKS["retrieval"].instruction
    assert instruction == "Given a web search query, retrieve relevant passages that answer the query"
    query = tiny_embedder.tokenize(TEXT, task="retrieval")[0]
    assert query == _ref_ids(tiny_embedder, f"Instruct: {instruction}\nQuery:{TEXT}")
    assert tiny_embedder.tokenize(TEXT, task="retrieval", input_type="query")[0] == query
    assert tiny_embedder.tokenize(TEXT, task="retrieval", input_type="document")[0] == _ref_ids(tiny_embedder, TEXT)
    code_doc = tiny_embedder.tokenize("def f(): pass", task="code_retrieval", input_type="document")[0]
    assert code_doc == _ref_ids(tiny_embedder, "def f(): pass")


@pytest.mark.parametrize(
    ("task", "instruction"),
    [
        ("sts", "Retrieve semantically similar text"),
        ("pair_classification", "Retrieve semantically similar text"),
        ("bitext", "Retrieve parallel sentences"),
    ],
)
def test_symmetric_presets_instruct_both_sides(tiny_embedder: Embedder, task: str, instruction: str) -> None:
    expected = _ref_ids(tiny_embedder, f"Instruct: {instruction}\nQuery:{TEXT}")
    assert tiny_embedder.tokenize(TEXT, task=task, input_type="query")[0] == expected
    assert tiny_embedder.tokenize(TEXT, task=task, input_type="document")[0] == expected


def test_every_preset_resolves() -> None:
    for name, preset in TASKS.items():
        assert resolve_prompt(QWEN, task=name) == format_instruction(preset.instruction)
        document = resolve_prompt(QWEN, task=name, input_type="document")
        assert document == ("" if not preset.symmetric else format_instruction(preset.instruction)), name
    assert {"retrieval", "code_retrieval", "sts", "pair_classification", "bitext", "classification", "clustering"} <= set(TASKS)


def test_unknown_prompt_name_lists_the_known_ones(tiny_embedder: Embedder) -> None:
    with pytest.raises(InputError) as info:
        tiny_embedder.encode(TEXT, prompt_name="passage")
    assert info.value.param == "prompt_name"
    assert "'passage'" in info.value.message and "document, query" in info.value.message


def test_unknown_task_lists_the_known_ones(tiny_embedder: Embedder) -> None:
    with pytest.raises(InputError) as info:
        tiny_embedder.encode(TEXT, task="search")
    assert info.value.param == "task"
    assert "'search'" in info.value.message and "retrieval" in info.value.message and "sts" in info.value.message


@pytest.mark.parametrize(
    "options",
    [
        {"prompt_name": "query", "instruction": "X"},
        {"instruction": "X", "task": "sts"},
        {"prompt_name": "query", "task": "retrieval"},
        {"prompt": "P", "instruction": "X"},
    ],
)
def test_two_ways_at_once_is_an_error(tiny_embedder: Embedder, options: dict) -> None:
    with pytest.raises(InputError, match="at most one of") as info:
        tiny_embedder.encode(TEXT, **options)
    assert info.value.param in options


def test_bad_input_type_and_empty_instruction(tiny_embedder: Embedder) -> None:
    with pytest.raises(InputError) as info:
        tiny_embedder.encode(TEXT, task="retrieval", input_type="passage")
    assert info.value.param == "input_type"
    with pytest.raises(InputError) as info:
        tiny_embedder.encode(TEXT, instruction="   ")
    assert info.value.param == "instruction"


def test_task_preset_adds_nothing_for_models_without_instructions(minilm_embedder: Embedder) -> None:
    plain = minilm_embedder.tokenize(TEXT)[0]
    for task in TASKS:
        for side in ("query", "document"):
            assert minilm_embedder.tokenize(TEXT, task=task, input_type=side)[0] == plain, (task, side)
    assert resolve_prompt(BERT, task="retrieval") == ""
    # An explicit instruction is always applied, even there.
    assert minilm_embedder.tokenize(TEXT, instruction="X")[0] != plain


def test_models_own_prompts_serve_a_preset_when_not_instruction_aware() -> None:
    e5_like = PipelineSpec(model_type="bert", hidden_size=8, pooling="mean", normalize=True, prompts={"query": "query: ", "document": "passage: "})
    assert not e5_like.instruction_aware
    assert resolve_prompt(e5_like, task="retrieval") == "query: "
    assert resolve_prompt(e5_like, task="retrieval", input_type="document") == "passage: "


def test_default_prompt_name_applies_when_nothing_is_given() -> None:
    spec = PipelineSpec(model_type="qwen3", hidden_size=8, pooling="lasttoken", normalize=True, prompts={"query": "Q:"}, default_prompt_name="query")
    assert resolve_prompt(spec) == "Q:"
    assert resolve_prompt(spec, prompt="") == ""
    assert resolve_prompt(QWEN) == ""
