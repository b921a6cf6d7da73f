"""Python API mirroring ``qembed eval``: one function per subcommand, same options.

    from qembed.eval import api
    result = api.sts("sts-test.tsv", model="minilm")
    result = api.retrieval("cranfield_beir", endpoint="http://127.0.0.1:30000", model_name="qwen3")
    table = api.compare([api.TargetSpec(model="minilm"), api.TargetSpec(endpoint=URL)],
                        [api.TaskSpec("sts", "sts-test.tsv")])

``target`` may also be given ready-made (an ``Embedder``, any ``Target``, or any
``qembed.embedding.protocol.TextEncoder``), which is how tests and notebooks avoid loading
a model twice. ``TargetSpec`` and ``make_target`` live in ``qembed.eval.spec`` (below this
module and ``qembed.eval.compare``, which must not import each other).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qembed.errors import InputError
from qembed.eval.cache import VectorCache
from qembed.eval.compare import run_comparison
from qembed.eval.datasets import Column, load_beir, load_pairs
from qembed.eval.prompts import InstructionMode, Prompting
from qembed.eval.search import SearchBackend
from qembed.eval.spec import TargetSpec, make_target
from qembed.eval.targets import Target
from qembed.eval.tasks import (
    DEFAULT_PRESETS,
    TaskResult,
    evaluate_code,
    evaluate_pairs,
    evaluate_retrieval,
    evaluate_sts,
)
from qembed.settings import DEFAULT_BATCH_SIZE

CacheArg = bool | str | Path | VectorCache | None


def make_cache(cache: CacheArg) -> VectorCache | None:
    if cache is None or cache is False:
        return None
    if isinstance(cache, VectorCache):
        return cache
    if cache is True:
        return VectorCache()
    return VectorCache(cache)


@contextlib.contextmanager
def _progress(show: bool) -> Iterator[Any]:
    if not show:
        yield None
        return
    from qembed.common.progress import progress_bar

    with progress_bar() as bar:
        yield bar


@contextlib.contextmanager
def _target_scope(target: Target | TargetSpec | Any, spec: dict[str, Any]) -> Iterator[Target]:
    """Targets we build we also close; ready-made ones belong to the caller."""
    built = target is None or isinstance(target, TargetSpec)
    made = make_target(target, **spec)
    try:
        yield made
    finally:
        if built:
            made.close()


def _prompting(
    task: str, preset: str | None, instruction: str | None, instruction_mode: InstructionMode
) -> Prompting:
    return Prompting(preset or DEFAULT_PRESETS[task], instruction=instruction, mode=instruction_mode)


def _spec(target: Any, model: str | None, endpoint: str | None, **rest: Any) -> dict[str, Any]:
    if target is not None:
        return {k: v for k, v in rest.items() if k in ("batch_size", "dimensions")}
    return {"model": model, "endpoint": endpoint, **rest}


def _pair_task(
    evaluate: Any,
    kind: str,
    path: str | Path,
    target: Any,
    model: str | None,
    endpoint: str | None,
    api_key: str | None,
    model_name: str | None,
    columns: Sequence[Column] | None,
    split: str | None,
    preset: str | None,
    instruction: str | None,
    instruction_mode: InstructionMode,
    cache: CacheArg,
    batch_size: int,
    dimensions: int | None,
    show_progress: bool,
) -> TaskResult:
    """The one body of ``sts``, ``pairs`` and ``code``: load pairs, open the target, evaluate."""
    data = load_pairs(path, columns=columns, split=split)
    spec = _spec(
        target,
        model,
        endpoint,
        api_key=api_key,
        model_name=model_name,
        batch_size=batch_size,
        dimensions=dimensions,
    )
    with _target_scope(target, spec) as t, _progress(show_progress) as bar:
        return evaluate(
            t,
            data,
            prompting=_prompting(kind, preset, instruction, instruction_mode),
            cache=make_cache(cache),
            progress=bar,
        )


def sts(
    path: str | Path,
    *,
    target: Any = None,
    model: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
    columns: Sequence[Column] | None = None,
    split: str | None = None,
    preset: str | None = None,
    instruction: str | None = None,
    instruction_mode: InstructionMode = "client",
    cache: CacheArg = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dimensions: int | None = None,
    show_progress: bool = False,
) -> TaskResult:
    """``qembed eval sts``: cosine Spearman/Pearson x100 against gold scores."""
    return _pair_task(
        evaluate_sts,
        "sts",
        path,
        target,
        model,
        endpoint,
        api_key,
        model_name,
        columns,
        split,
        preset,
        instruction,
        instruction_mode,
        cache,
        batch_size,
        dimensions,
        show_progress,
    )


def pairs(
    path: str | Path,
    *,
    target: Any = None,
    model: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
    columns: Sequence[Column] | None = None,
    split: str | None = None,
    preset: str | None = None,
    instruction: str | None = None,
    instruction_mode: InstructionMode = "client",
    cache: CacheArg = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dimensions: int | None = None,
    show_progress: bool = False,
) -> TaskResult:
    """``qembed eval pairs``: AP of cosine, best-threshold accuracy and F1 (x100)."""
    return _pair_task(
        evaluate_pairs,
        "pairs",
        path,
        target,
        model,
        endpoint,
        api_key,
        model_name,
        columns,
        split,
        preset,
        instruction,
        instruction_mode,
        cache,
        batch_size,
        dimensions,
        show_progress,
    )


def code(
    path: str | Path,
    *,
    target: Any = None,
    model: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
    columns: Sequence[Column] | None = None,
    split: str | None = None,
    preset: str | None = None,
    instruction: str | None = None,
    instruction_mode: InstructionMode = "client",
    cache: CacheArg = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dimensions: int | None = None,
    show_progress: bool = False,
) -> TaskResult:
    """``qembed eval code``: mean cosine of matches/non-matches, gap, ROC AUC x100."""
    return _pair_task(
        evaluate_code,
        "code",
        path,
        target,
        model,
        endpoint,
        api_key,
        model_name,
        columns,
        split,
        preset,
        instruction,
        instruction_mode,
        cache,
        batch_size,
        dimensions,
        show_progress,
    )


def retrieval(
    folder: str | Path,
    *,
    target: Any = None,
    model: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
    split: str | None = None,
    use_title: bool = True,
    preset: str | None = None,
    instruction: str | None = None,
    instruction_mode: InstructionMode = "client",
    cache: CacheArg = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dimensions: int | None = None,
    search: SearchBackend = "auto",
    show_progress: bool = False,
) -> TaskResult:
    """``qembed eval retrieval``: nDCG@10, MRR@10, P@1, Recall@10/100, MAP@100 (x100) on a BEIR folder."""
    data = load_beir(folder, split=split, use_title=use_title)
    spec = _spec(
        target,
        model,
        endpoint,
        api_key=api_key,
        model_name=model_name,
        batch_size=batch_size,
        dimensions=dimensions,
    )
    with _target_scope(target, spec) as t, _progress(show_progress) as bar:
        return evaluate_retrieval(
            t,
            data,
            prompting=_prompting("retrieval", preset, instruction, instruction_mode),
            cache=make_cache(cache),
            progress=bar,
            search=search,
        )


@dataclass
class TaskSpec:
    """One evaluation of a comparison: kind (sts, pairs, retrieval, code), data path, options."""

    kind: str
    path: str | Path
    columns: Sequence[Column] | None = None
    split: str | None = None
    preset: str | None = None
    instruction: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # e.g. use_title for retrieval

    def __post_init__(self) -> None:
        if self.kind not in DEFAULT_PRESETS:
            raise InputError(
                f"unknown task {self.kind!r}; known: {', '.join(DEFAULT_PRESETS)}.", param="task"
            )


def compare(
    targets: Sequence[TargetSpec | Target | Any],
    tasks: Sequence[TaskSpec],
    *,
    instruction_mode: InstructionMode = "client",
    cache: CacheArg = True,
    search: SearchBackend = "auto",
    show_progress: bool = False,
) -> Any:
    """``qembed eval compare``: every target on every task -> a ``Comparison``."""
    with _progress(show_progress) as bar:
        return run_comparison(
            targets,
            tasks,
            instruction_mode=instruction_mode,
            cache=make_cache(cache),
            search=search,
            progress=bar,
        )
