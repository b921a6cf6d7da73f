"""Instruction prompts: ``prompt_name``, a free ``instruction``, or a ``task`` preset.

Qwen3-Embedding is trained with ``Instruct: {instruction}\\nQuery:{text}`` on the query
side. The presets follow the official Qwen3-Embedding evaluation rules: for asymmetric
tasks (retrieval, code retrieval) only queries get the instruction, documents none; for
symmetric tasks (STS, pair classification, bitext, classification, clustering) every
text gets it.

| task                  | instruction                                                                 | queries | documents |
|-----------------------|-----------------------------------------------------------------------------|---------|-----------|
| retrieval             | Given a web search query, retrieve relevant passages that answer the query | yes     | no        |
| code_retrieval        | Given a code search query, retrieve relevant code snippets that answer the query | yes | no        |
| sts                   | Retrieve semantically similar text                                          | yes     | yes       |
| pair_classification   | Retrieve semantically similar text                                          | yes     | yes       |
| bitext                | Retrieve parallel sentences                                                 | yes     | yes       |
| classification        | Classify the given text by its topic                                        | yes     | yes       |
| clustering            | Identify the main topic or theme of the given text                          | yes     | yes       |

Other model families get their own convention from a preset instead (one table in
``qembed.model.families``): E5 ``query: ``/``passage: `` (``query: `` on both sides of a
symmetric task), BGE zh/en a query instruction for asymmetric tasks only, any other model
its own ``query``/``document`` prompts from config_sentence_transformers.json, and models
trained without prompts (all-MiniLM-L6-v2) nothing: a Qwen3 instruction would only hurt
them. An explicit ``instruction`` is always applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from qembed.errors import InputError
from qembed.model.families import FAMILIES, detect_family, fixed_prompt
from qembed.model.pipeline import PipelineSpec
from qembed.settings import InputType


@dataclass(frozen=True)
class TaskPreset:
    instruction: str
    symmetric: bool  # True: queries and documents both get the instruction


TASKS: dict[str, TaskPreset] = {
    "retrieval": TaskPreset(
        "Given a web search query, retrieve relevant passages that answer the query", False
    ),
    "code_retrieval": TaskPreset(
        "Given a code search query, retrieve relevant code snippets that answer the query", False
    ),
    "sts": TaskPreset("Retrieve semantically similar text", True),
    "pair_classification": TaskPreset("Retrieve semantically similar text", True),
    "bitext": TaskPreset("Retrieve parallel sentences", True),
    "classification": TaskPreset("Classify the given text by its topic", True),
    "clustering": TaskPreset("Identify the main topic or theme of the given text", True),
}


def format_instruction(instruction: str) -> str:
    """The exact prefix Qwen3-Embedding was trained with (no space after 'Query:')."""
    return f"Instruct: {instruction}\nQuery:"


def family_of(spec: PipelineSpec) -> str:
    """The prompt family of a loaded model (detected at load; from model_type/prompts otherwise)."""
    return spec.prompt_family or detect_family(spec.model_type, spec.prompts)


def preset_prompt(family: str, prompts: dict[str, str], task: str, input_type: InputType = "query") -> str:
    """What a task preset gives one side for a model of this family (the rules of the table)."""
    preset = TASKS.get(task)
    if preset is None:
        raise InputError(f"Unknown task {task!r}; known tasks: {', '.join(TASKS)}.", param="task")
    if family not in FAMILIES:
        raise InputError(
            f"Unknown prompt family {family!r}; known: {', '.join(FAMILIES)}.", param="prompt_family"
        )
    if FAMILIES[family].instruct:
        if input_type == "document" and not preset.symmetric:
            return ""
        return format_instruction(preset.instruction)
    return fixed_prompt(family, prompts, symmetric=preset.symmetric, input_type=input_type)


def resolve_prompt(
    spec: PipelineSpec,
    *,
    prompt_name: str | None = None,
    prompt: str | None = None,
    instruction: str | None = None,
    task: str | None = None,
    input_type: InputType = "query",
) -> str:
    """The text prefix for one encode call. At most one way of choosing it may be given."""
    given = [
        n
        for n, v in (
            ("prompt_name", prompt_name),
            ("prompt", prompt),
            ("instruction", instruction),
            ("task", task),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise InputError(
            f"Give at most one of prompt_name, prompt, instruction, task (got {', '.join(given)}).",
            param=given[1],
        )
    if input_type not in ("query", "document"):
        raise InputError(f"input_type must be 'query' or 'document', not {input_type!r}.", param="input_type")
    if prompt is not None:
        return prompt
    if instruction is not None:
        if not instruction.strip():
            raise InputError("instruction is empty; omit it or give the task in words.", param="instruction")
        return format_instruction(instruction.strip())
    if prompt_name is not None:
        if prompt_name not in spec.prompts:
            known = ", ".join(sorted(spec.prompts)) or "none"
            raise InputError(
                f"Unknown prompt_name {prompt_name!r}; this model's prompts: {known}.", param="prompt_name"
            )
        return spec.prompts[prompt_name]
    if task is not None:
        return preset_prompt(family_of(spec), spec.prompts, task, input_type)
    if spec.default_prompt_name:
        return spec.prompts.get(spec.default_prompt_name, "")
    return ""
