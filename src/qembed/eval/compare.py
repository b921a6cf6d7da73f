"""Several targets x several tasks -> one table (rich), JSON and Markdown.

Targets run one after another, each built only when its turn comes and released after, so
that in-process models are never in memory together and each target's peak memory is its
own. Data sets are read once, before any model loads, so a typo in a path fails in a
second, not after the first model's run. A target that fails (server down, model
missing) is reported with its error; the others still run.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from qembed.errors import QembedError
from qembed.eval.cache import VectorCache
from qembed.eval.datasets import PairData, RetrievalData, load_beir, load_pairs
from qembed.eval.prompts import InstructionMode, Prompting
from qembed.eval.search import SearchBackend
from qembed.eval.spec import TargetSpec, make_target
from qembed.eval.tasks import (
    DEFAULT_PRESETS,
    TaskResult,
    evaluate_code,
    evaluate_pairs,
    evaluate_retrieval,
    evaluate_sts,
)

NOT_HIGHER_BETTER = {"accuracy_threshold_cos", "f1_threshold_cos", "mean_cos_match", "mean_cos_nonmatch"}
PERF_COLUMNS = [
    ("load_seconds", "load s"),
    ("embed_seconds", "embed s"),
    ("texts_per_second", "texts/s"),
    ("latency_ms_p50", "batch p50 ms"),
    ("latency_ms_p95", "batch p95 ms"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("peak_cuda_mib", "peak CUDA MiB"),
    ("server_rss_mib", "server RSS MiB"),
]


@dataclass
class TargetReport:
    name: str
    identity: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # what each task's two sides got, e.g. {"sts": "query: 'Instruct: ...'; document: ..."}: a score
    # over HTTP with a prompt the model was not trained with reads very differently
    prompts: dict[str, str] = field(default_factory=dict)


@dataclass
class Comparison:
    results: list[TaskResult]
    targets: list[TargetReport]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    # -- shape ----------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str, str, bool, dict[str, float]]]:
        """(task, dataset, metric, is_main, {target: value}) in first-seen order, main metric first."""
        order: dict[tuple[str, str], list[str]] = {}
        values: dict[tuple[str, str, str], dict[str, float]] = {}
        main: dict[tuple[str, str], str] = {}
        for r in self.results:
            key = (r.task, r.dataset)
            main[key] = r.main_metric
            names = order.setdefault(key, [])
            for metric, value in r.scores.items():
                if metric not in names:
                    names.append(metric)
                values.setdefault((*key, metric), {})[r.target] = value
        out = []
        for key, names in order.items():
            names.sort(key=lambda m: m != main[key])
            for metric in names:
                out.append((key[0], key[1], metric, metric == main[key], values[(*key, metric)]))
        return out

    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    # -- outputs --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "targets": [t.__dict__ for t in self.targets],
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)

    def to_markdown(self) -> str:
        names = self.target_names()
        lines = [
            f"# qembed eval compare ({self.created})",
            "",
            "Scores x100 except cosines and thresholds; `*` = the task's main metric.",
            "",
        ]
        lines.append("| task | data | metric | " + " | ".join(names) + " |")
        lines.append("|---|---|---|" + "---:|" * len(names))
        for task, dataset, metric, is_main, values in self.rows():
            best = _best(metric, values)
            cells = [_cell(values.get(n), bold=(n == best)) for n in names]
            lines.append(
                f"| {task} | {dataset} | {metric}{' *' if is_main else ''} | " + " | ".join(cells) + " |"
            )
        lines += [
            "",
            "| target | " + " | ".join(label for _, label in PERF_COLUMNS) + " |",
            "|---|" + "---:|" * len(PERF_COLUMNS),
        ]
        for t in self.targets:
            lines.append(
                f"| {t.name} | " + " | ".join(_plain(t.stats.get(k)) for k, _ in PERF_COLUMNS) + " |"
            )
        prompts = [f"- {t.name}, {kind}: {text}" for t in self.targets for kind, text in t.prompts.items()]
        if prompts:
            lines += [
                "",
                "Prompts each target's texts got (a model scored with a prompt it was not trained with reads lower):",
                *prompts,
            ]
        errors = [f"- {t.name}: {e}" for t in self.targets for e in t.errors]
        if errors:
            lines += ["", "Errors:", *errors]
        return "\n".join(lines) + "\n"

    def rich_tables(self) -> list[Table]:
        names = self.target_names()
        scores = Table(title="qembed eval compare (x100; * main metric)")
        for col in ("task", "data", "metric"):
            scores.add_column(col)
        for n in names:
            scores.add_column(n, justify="right")
        for task, dataset, metric, is_main, values in self.rows():
            best = _best(metric, values)
            cells = [_cell(values.get(n)) for n in names]
            cells = [f"[bold green]{c}[/]" if n == best else c for n, c in zip(names, cells, strict=True)]
            scores.add_row(task, dataset, f"[bold]{metric} *[/]" if is_main else metric, *cells)
        perf = Table(title="latency and memory per target")
        perf.add_column("target")
        for _, label in PERF_COLUMNS:
            perf.add_column(label, justify="right")
        for t in self.targets:
            perf.add_row(t.name, *(_plain(t.stats.get(k)) for k, _ in PERF_COLUMNS))
        prompts = Table(title="prompts each target's texts got")
        for col in ("target", "task", "query / document"):
            prompts.add_column(col)
        for t in self.targets:
            for kind, text in t.prompts.items():
                prompts.add_row(t.name, kind, text)
        return [scores, perf, prompts]


def _best(metric: str, values: dict[str, float]) -> str | None:
    if metric in NOT_HIGHER_BETTER or len(values) < 2:
        return None
    return max(values, key=lambda n: values[n])


def _cell(value: float | None, bold: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.4f}" if abs(value) < 2 else f"{value:.2f}"
    return f"**{text}**" if bold else text


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


def _load(task: Any) -> PairData | RetrievalData:
    if task.kind == "retrieval":
        return load_beir(task.path, split=task.split, **task.options)
    return load_pairs(task.path, columns=task.columns, split=task.split)


def _label(spec: Any) -> str:
    """A short name for a target before it is built (for progress and errors)."""
    for attr in ("name", "model", "endpoint"):
        value = getattr(spec, attr, None)
        if isinstance(value, str) and value:
            return value
    settings = getattr(spec, "settings", None)
    if settings is not None and settings.model:
        return settings.model
    info = getattr(spec, "info", None)  # a ready Embedder
    return info.model_id if info is not None else "the default model"


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} #{n}", n + 1
    taken.add(candidate)
    return candidate


def run_comparison(
    targets: Sequence[Any],
    tasks: Sequence[Any],
    *,
    instruction_mode: InstructionMode = "client",
    cache: VectorCache | None = None,
    search: SearchBackend = "auto",
    progress: Any = None,
) -> Comparison:
    """Run every task for every target (see the module docstring for the order)."""
    if not targets or not tasks:
        raise QembedError("compare needs at least one target and one task.")
    data = [_load(task) for task in tasks]
    results: list[TaskResult] = []
    reports: list[TargetReport] = []
    taken: set[str] = set()
    for spec in targets:
        label = _label(spec)
        loading = progress.add_task(f"{label}: loading", total=None) if progress is not None else None
        try:
            target = make_target(spec)
        except QembedError as exc:
            reports.append(TargetReport(_unique_name(str(label), taken), errors=[exc.message]))
            continue
        finally:
            if loading is not None:
                progress.remove_task(loading)
        target.name = _unique_name(target.name, taken)
        report = TargetReport(target.name, identity=target.identity())
        try:
            for task, dataset in zip(tasks, data, strict=True):
                prompting = Prompting(
                    task.preset or DEFAULT_PRESETS[task.kind],
                    instruction=task.instruction,
                    mode=instruction_mode,
                )
                report.prompts[task.kind] = "; ".join(
                    f"{role}: {target.prompt_description(prompting, role)}" for role in ("query", "document")
                )
                try:
                    results.append(_evaluate(task.kind, target, dataset, prompting, cache, progress, search))
                except QembedError as exc:
                    report.errors.append(f"{task.kind} {dataset.name}: {exc.message}")
            report.stats = target.stats.summary()
        finally:
            if isinstance(spec, TargetSpec):
                target.close()
                del target
                gc.collect()
        reports.append(report)
    return Comparison(results, reports)


def _evaluate(
    kind: str,
    target: Any,
    dataset: Any,
    prompting: Prompting,
    cache: VectorCache | None,
    progress: Any,
    search: SearchBackend,
) -> TaskResult:
    if kind == "sts":
        return evaluate_sts(target, dataset, prompting=prompting, cache=cache, progress=progress)
    if kind == "pairs":
        return evaluate_pairs(target, dataset, prompting=prompting, cache=cache, progress=progress)
    if kind == "code":
        return evaluate_code(target, dataset, prompting=prompting, cache=cache, progress=progress)
    return evaluate_retrieval(
        target, dataset, prompting=prompting, cache=cache, progress=progress, search=search
    )
