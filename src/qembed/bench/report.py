"""Write a bench result as JSON (every figure), Markdown (for people) and PNG plots.

The JSON is the record: machine, versions, model, settings, every round of every engine.
The Markdown is rendered only from the JSON, so the two cannot disagree. Plots need
matplotlib (the ``bench`` extra); without it the report says so instead of failing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += [
        "| "
        + " | ".join(
            _fmt(c) if not isinstance(c, str) else c.replace("|", "\\|").replace("\n", " ") for c in row
        )
        + " |"
        for row in rows
    ]
    return lines


def _machine_lines(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    gpus = ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in m.get("gpus", [])) or "none"
    lines = [
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}; {m['cores_available']} cores available to the process ({m['cores_logical']} logical); "
        f"flags: {', '.join(m['cpu_flags']) or '-'}; native bf16: {'yes' if m['native_bf16'] else 'no'}",
        f"- Memory: {m['memory_gb']} GB; GPUs: {gpus}",
        f"- Platform: {m['platform']}; load average at start: {m.get('load_average_at_start', '-')}",
    ]
    for dtype, g in (report.get("gemm") or {}).items():
        unit = "GOP/s" if dtype == "int8" else "GFLOP/s"
        spread = (
            f" over {g['samples']} samples through the run (best of each: {', '.join(f'{x:,.0f}' for x in g['sample_best_gflops'])})"
            if g.get("samples")
            else ""
        )
        lines.append(f"- Matrix multiply ({dtype}, {g['n']}^3 on {g['device']}, {g['threads'] or '-'} threads): best {g['best_gflops']:,.1f} {unit}, "
                     f"median {g['median_gflops']:,.1f} of {g['runs']} runs{spread}")  # fmt: skip
    lines += ["", "## Software", "", ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return lines


def _checks_lines(checks: list[dict[str, Any]]) -> list[str]:
    if not checks:
        return []
    failed = [c for c in checks if not c["ok"]]
    lines = ["## Consistency checks", "", f"{len(checks) - len(failed)} of {len(checks)} passed.", ""]
    # Collapse the per-round workload checks; list every failure.
    for c in failed:
        lines.append(f"- FAILED: {c['name']}: {c['detail']}")
    names = sorted({c["name"].split(" (variant")[0] for c in checks if c["ok"]})
    lines += [f"- ok: {n}" for n in names]
    return lines + [""]


def gate_lines(engines: list[dict[str, Any]]) -> list[str]:
    """The int8 engines' quality-gate table (empty when no engine is int8)."""
    gated = [
        (e["name"], e["info"]["quantization"]) for e in engines if (e.get("info") or {}).get("quantization")
    ]
    if not gated:
        return []
    lines = [
        "",
        "int8 quality gate (each build's vectors vs float32 on qembed's calibration set, measured once per export):",
        "",
    ]
    lines += _table(
        ["engine", "min cosine", "mean cosine", "texts", "threshold", "SmoothQuant alpha", "kept in float"],
        [
            [
                name,
                _fmt(q["gate"]["min_cosine"], 5),
                _fmt(q["gate"]["mean_cosine"], 5),
                q["gate"]["texts"],
                _fmt(q["gate"]["threshold"], 4),
                _fmt(((q.get("recipe") or {}).get("smoothquant") or {}).get("alpha"), 2),
                ", ".join((q.get("recipe") or {}).get("keep") or []) or "-",
            ]
            for name, q in gated
        ],
    )
    return lines


def throughput_markdown(report: dict[str, Any], plots: list[str]) -> str:
    model = report["model"]
    lines = [
        "# qembed bench throughput",
        "",
        f"Run {report['started']} to {report['finished']} ({report['duration_s']} s); {report['options']['rounds']} alternating rounds; "
        f"device {report['options']['device']}.",
        "",
        *_machine_lines(report),
        "## Model",
        "",
        f"`{model['path']}`: {model['model_type']}, {model['params'] / 1e6:,.1f} M parameters ({model['non_embedding_params'] / 1e6:,.1f} M outside embeddings), "
        f"{model['layers']} layers, {model['gflops_per_token_linear']} GFLOP per token plus attention, checkpoint dtype {model['checkpoint_dtype']}, "
        f"{model['size_on_disk_mb']} MB on disk.",
        "",
        "## Engines",
        "",
    ]
    rows = []
    for e in report["engines"]:
        status = e["status"] if e["status"] == "ok" else f"{e['status']}: {e['reason']}"
        load = e["info"].get("load_seconds")
        rows.append(
            [
                e["name"],
                e["label"],
                e["role"],
                status,
                e["dtype"] or "-",
                _fmt(load, 1),
                _fmt(e["peak_rss_mb"], 0) + (f" ({e['rss_of']})" if e["rss_of"] else ""),
            ]
        )
    lines += _table(["engine", "what", "role", "status", "dtype", "load s", "peak RSS MB"], rows)
    lines += gate_lines(report["engines"])
    lines += ["", "## Throughput", "", "Tokens/s: median of the rounds (min-max). Ratio: to the baseline, the fastest sentence-transformers setting measured in the same cell. "
              "MFU: model FLOPs per second over the measured matrix-multiply rate of the dtype the engine computes in (int8 engines: the int8 rate).", ""]  # fmt: skip
    for cell in report["cells"]:
        mix = ", ".join(f"{k} {v}" for k, v in (cell.get("languages") or {}).items())
        lines += [
            f"### {cell['workload']}: {cell['texts']} texts x {cell['tokens_per_text']} tokens ({mix}), batch {cell['batch_size']} (baseline: {cell['baseline'] or 'none'})",
            "",
        ]
        rows = []
        for name, r in cell["results"].items():
            if "error" in r:
                rows.append([name, f"error: {r['error']}", "", "", "", ""])
                continue
            ratio = _fmt(r["ratio"], 2) + "x" if r.get("ratio") is not None else "-"
            if name == "st-default":
                ratio += " (default, not used for ratios)"
            rows.append(
                [
                    name,
                    _fmt(r["tokens_per_s"], 1),
                    f"{_fmt(r['tokens_per_s_min'], 1)}-{_fmt(r['tokens_per_s_max'], 1)}",
                    _fmt(r["texts_per_s"], 2),
                    ratio,
                    f"{r['mfu'] * 100:.1f}%" if r["mfu"] is not None else "-",
                ]
            )
        lines += _table(["engine", "tokens/s", "range", "texts/s", "ratio", "MFU"], rows) + [""]
    lat = report["latency"]
    if lat["results"]:
        lines += [
            f"## Single-query latency ({lat['tokens_per_query']} tokens, {lat['queries_per_round']} queries per round, one at a time)",
            "",
        ]
        rows = []
        for name, r in lat["results"].items():
            if "p50_ms" not in r:
                rows.append([name, f"error: {r.get('error')}", "", "", ""])
                continue
            rows.append(
                [
                    name,
                    _fmt(r["p50_ms"], 2),
                    _fmt(r["p90_ms"], 2),
                    _fmt(r["mean_ms"], 2),
                    (_fmt(r["speedup"], 2) + "x") if r.get("speedup") is not None else "-",
                ]
            )
        lines += _table(["engine", "p50 ms", "p90 ms", "mean ms", f"speedup vs {lat['baseline']}"], rows) + [
            ""
        ]
    agreement = report.get("agreement") or {}
    if agreement.get("results"):
        lines += [f"## Agreement with qembed's vectors ({agreement['texts']} texts of {agreement['tokens_per_text']} tokens)", "",
                  "Cosine to the in-process qembed vectors of the same texts: the engines do the same work (pooling, no truncation). "
                  "With random weights this compares implementations, never quality.", ""]  # fmt: skip
        rows = [
            [n, r.get("error") or _fmt(r["mean_cosine"], 5), "" if "error" in r else _fmt(r["min_cosine"], 5),
             "" if "error" in r else ("yes" if r["same_work"] else "NO: it computes other vectors; its speed is not comparable as is")]
            for n, r in agreement["results"].items()
        ]  # fmt: skip
        lines += _table(["engine", "mean cosine", "min cosine", "same work (min >= 0.99)"], rows) + [""]
    if report.get("targets"):
        lines += ["## Targets (reported, not asserted)", ""]
        lines += _table(
            ["target", "value", "wanted", "met"],
            [
                [t["name"], _fmt(t["value"], 3), t["target"], "yes" if t["met"] else "no"]
                for t in report["targets"]
            ],
        ) + [""]
    if report.get("peer"):
        p = report["peer"]
        state = (
            f"{p.get('version')}, installed as `{p.get('requirement') or '?'}` in {p.get('python')}"
            if p.get("available")
            else "not measured: " + p.get("reason", "")
        )
        lines += ["## Peer", "", f"infinity-emb: {state}", ""]
        if p.get("attempts"):
            lines += ["Install attempts that failed:", ""]
        for a in p.get("attempts", []):
            lines += [f"- {a['step']}:", "", "```", a["error"], "```", ""]
    if report.get("peer_llamacpp"):
        from qembed.bench.peer_llamacpp import markdown as llamacpp_markdown

        lines += llamacpp_markdown(report["peer_llamacpp"], report["engines"])
    lines += _checks_lines(report.get("checks", []))
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def load_markdown(report: dict[str, Any], plots: list[str]) -> str:
    w = report["workload"]
    lines = [
        "# qembed bench load",
        "",
        f"Run {report['started']} to {report['finished']}. Endpoint `{report['endpoint']}`, model `{report['model']}`; "
        f"each request: {w['inputs_per_request']} x {w['tokens_per_text']}-token {w['name']} text(s) from a pool of {w['pool']} "
        f"(tokens counted with `{report['tokenizer']}`). Closed loop: each client waits for its answer before the next request.",
        "",
        *_machine_lines(report),
        "## Levels",
        "",
    ]
    rows = []
    for lv in report["levels"]:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(lv["errors"].items())) or "0"
        lat = lv["latency_ms"]
        rows.append([lv["concurrency"], _fmt(lv["wall_seconds"], 1), lv["requests"], lv["successes"], errors, f"{lv['error_rate'] * 100:.2f}%",
                     _fmt(lat["p50"], 1), _fmt(lat["p90"], 1), _fmt(lat["p99"], 1), _fmt(lv["requests_per_s"], 2), _fmt(lv["tokens_per_s"], 1)])  # fmt: skip
    lines += _table(
        [
            "clients",
            "s",
            "requests",
            "ok",
            "errors by status",
            "error rate",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "requests/s",
            "tokens/s",
        ],
        rows,
    ) + [""]
    for lv in report["levels"]:
        for status, example in lv["error_examples"].items():
            lines.append(f"- c={lv['concurrency']}, {status}: `{example[:200]}`")
    soak = report.get("soak")
    if soak:
        lines += ["", "## Soak", ""]
        if soak.get("growth_pct") is not None:
            lines += [
                f"{soak['concurrency']} clients for {soak['duration_s']:.0f} s; server pid {soak['pid']} sampled every {soak['interval_s']} s "
                f"({len(soak.get('samples', []))} samples); warm-up {soak['warmup_s']:.0f} s.",
                "",
                f"- RSS after warm-up: {soak['rss_at_warmup_mb']:,.1f} MB; at the end: {soak['rss_end_mb']:,.1f} MB; peak after warm-up: {soak['rss_peak_after_warmup_mb']:,.1f} MB",
                f"- Growth after warm-up: {soak['growth_pct']:+.2f}% (peak {soak['peak_growth_pct']:+.2f}%); trend {_fmt(soak.get('slope_mb_per_hour'), 1)} MB/hour",
            ]
        else:
            lines.append(f"- {soak.get('note', 'no RSS samples')}")
    lines += [""] + _checks_lines(report.get("checks", []))
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_plot(
    fig: Any, ax: Any, path: Path, *, title: str, xlabel: str, ylabel: str, legend_size: int | None = None
) -> str:
    """Labels, grid and legend every plot of ours has; writes the PNG and frees the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return str(path)


def throughput_plots(report: dict[str, Any], out: Path) -> list[str]:
    plt = _pyplot()
    paths = []
    # Throughput vs batch size, per workload that was measured at more than one size (or
    # the first workload otherwise), one line per engine.
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for cell in report["cells"]:
        by_workload.setdefault(f"{cell['workload']} ({cell['tokens_per_text']} tokens)", []).append(cell)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, cells in by_workload.items():
        if len(cells) < 2 and len(by_workload) > 1 and any(len(c) > 1 for c in by_workload.values()):
            continue
        cells = sorted(cells, key=lambda c: c["batch_size"])
        engines = sorted({n for c in cells for n, r in c["results"].items() if "tokens_per_s" in r})
        for name in engines:
            xs = [c["batch_size"] for c in cells if "tokens_per_s" in c["results"].get(name, {})]
            ys = [
                c["results"][name]["tokens_per_s"]
                for c in cells
                if "tokens_per_s" in c["results"].get(name, {})
            ]
            ax.plot(xs, ys, marker="o", label=f"{name}, {label}")
    ax.set_xscale("log", base=2)
    sizes = sorted({c["batch_size"] for c in report["cells"]})
    ax.set_xticks(sizes, [str(b) for b in sizes])
    paths.append(_save_plot(fig, ax, out / "throughput_vs_batch_size.png", title="Throughput vs batch size",
                            xlabel="batch size (texts per call / request)", ylabel="tokens/s", legend_size=7))  # fmt: skip
    return paths


def load_plots(report: dict[str, Any], out: Path) -> list[str]:
    plt = _pyplot()
    paths = []
    levels = [lv for lv in report["levels"] if lv["latency_ms"]["p50"] is not None]
    if levels and not report.get("soak"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [lv["concurrency"] for lv in levels]
        for q in ("p50", "p90", "p99"):
            ax.plot(xs, [lv["latency_ms"][q] for lv in levels], marker="o", label=q)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        paths.append(_save_plot(fig, ax, out / "latency_vs_concurrency.png", title="Latency vs concurrency",
                                xlabel="concurrent clients (closed loop)", ylabel="latency, ms"))  # fmt: skip
    soak = report.get("soak") or {}
    if soak.get("samples"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ts, mb = zip(*soak["samples"], strict=True)
        ax.plot(ts, mb)
        ax.axvline(soak["warmup_s"], color="grey", linestyle="--", label="end of warm-up")
        paths.append(
            _save_plot(
                fig,
                ax,
                out / "soak_rss.png",
                title="Soak: server memory",
                xlabel="seconds",
                ylabel="server RSS, MB",
            )
        )
    return paths


def write_report(report: dict[str, Any], out: Path, *, name: str) -> dict[str, Path]:
    """``{name}.json``, ``{name}.md`` and plots in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    make_plots = throughput_plots if report["kind"] == "throughput" else load_plots
    try:
        plots = make_plots(report, out)
        report["plots"] = [Path(p).name for p in plots]
    except ImportError:
        plots = []
        report["plots"] = []
        report["plots_note"] = "matplotlib is not installed (pip install 'qembed-server[bench]'): no plots"
        log.warning("%s", report["plots_note"])  # said, not silently skipped
    render = throughput_markdown if report["kind"] == "throughput" else load_markdown
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    note = f"\n> {report['plots_note']}\n" if report.get("plots_note") else ""
    paths["markdown"].write_text(render(report, plots) + note)
    for p in plots:
        paths[Path(p).stem] = Path(p)
    return paths
