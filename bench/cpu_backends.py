"""Compare qembed's CPU backends with sentence-transformers float32, in one run.

    .venv/bin/python bench/cpu_backends.py --model models/qwen3-0.6b-random \
        --engines st,torch,onnx,onnx-int8,openvino,openvino-int8 --rounds 3 --out bench-cpu.json

Each engine lives in a worker process of its own (so its peak RSS and load time are its
own), and only one worker computes at a time. Rounds alternate the engines (the order
rotates each round), so load from other jobs on the machine falls on all of them alike;
compare the ratios within one run, not absolute numbers across runs.

Workloads (texts cut to exact token lengths with the model's own tokenizer, by
``qembed.bench.workloads``): passages (128 tokens), documents (512 tokens), and one
16-token query encoded alone (latency). qembed engines encode with
``input_type="document"`` and ``long_text="truncate"`` so that both sides embed exactly
the same tokens (no query instruction is added; inputs longer than the model's window are
cut as sentence-transformers cuts them, not chunked).

Quality (``--quality``, every engine): mean cosine of each engine's vectors to
sentence-transformers float32 on the passages, and with ``--stsb FILE`` the STS-B
Spearman (x100) of cosine similarity; the gate for int8 is Spearman within 0.5 of float32
and mean cosine >= 0.99 (real weights only: on random weights a cosine is a sanity check).

Exports are built (and cached next to the model) before any worker starts, so load times
are those of a warm cache; the export time of a cold cache is reported separately.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ENGINES: dict[str, dict[str, str]] = {
    "st": {},
    "torch": {"backend": "torch", "quantize": "none"},
    "torch-int8": {"backend": "torch", "quantize": "int8"},
    "onnx": {"backend": "onnx", "quantize": "none"},
    "onnx-int8": {"backend": "onnx", "quantize": "int8"},
    "openvino": {"backend": "openvino", "quantize": "none"},
    "openvino-int8": {"backend": "openvino", "quantize": "int8"},
}


# --- worker --------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: per address space, so not the spawning parent's,
    which getrusage's ru_maxrss carries across exec)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _worker(name: str, model: str, threads: int | None, export_dir: str | None, conn) -> None:
    began = time.perf_counter()
    try:
        if name == "st":
            import torch
            from sentence_transformers import SentenceTransformer

            from qembed.model.backends.threads import intra_op_threads

            torch.set_num_threads(intra_op_threads(threads))
            # float32 explicitly: sentence-transformers >= 5 keeps the checkpoint's dtype
            # (bfloat16 for Qwen3) unless told otherwise.
            st = SentenceTransformer(model, device="cpu", model_kwargs={"dtype": torch.float32})

            def encode(texts: list[str], batch_size: int):
                return st.encode(
                    texts,
                    batch_size=batch_size,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                    normalize_embeddings=True,
                )

            describe = {
                "backend": "sentence-transformers",
                "dtype": str(next(st.parameters()).dtype).removeprefix("torch."),
            }
        else:
            from qembed import Embedder

            embedder = Embedder(model, threads=threads, export_dir=export_dir, **ENGINES[name])

            def encode(texts: list[str], batch_size: int):
                # truncate like sentence-transformers does at the model's window (MiniLM: 256)
                return embedder.encode(
                    texts, batch_size=batch_size, input_type="document", normalize=True, long_text="truncate"
                )

            describe = {"backend": embedder.info.backend, "dtype": embedder.info.dtype}
        encode(["warm up"], 1)
    except BaseException as exc:  # noqa: BLE001 - reported by the coordinator
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {**describe, "load_seconds": round(time.perf_counter() - began, 2)}))
    while True:
        message = conn.recv()
        if message[0] == "stop":
            conn.send(("ok", {"peak_rss_mb": _peak_rss_mb()}))
            return
        try:
            if message[0] == "encode":
                t0 = time.perf_counter()
                encode(message[1], message[2])
                conn.send(("ok", time.perf_counter() - t0))
            elif message[0] == "latency":
                times = []
                for text in message[1]:
                    t0 = time.perf_counter()
                    encode([text], 1)
                    times.append(time.perf_counter() - t0)
                conn.send(("ok", times))
            elif message[0] == "vectors":
                conn.send(("ok", encode(message[1], 32)))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class Worker:
    def __init__(self, name: str, model: str, threads: int | None, export_dir: str | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker, args=(name, model, threads, export_dir, child), daemon=True
        )
        self.process.start()
        child.close()
        reply = self.conn.recv()
        if reply[0] != "ready":
            self.process.join(10)
            raise RuntimeError(f"{name}: {reply[1]}")
        self.info: dict[str, Any] = reply[1]

    def call(self, *message: Any) -> Any:
        self.conn.send(message)
        reply = self.conn.recv()
        if reply[0] != "ok":
            raise RuntimeError(f"{self.name}: {reply[1]}")
        return reply[1]

    def stop(self) -> dict[str, Any]:
        stats = self.call("stop")
        self.process.join(30)
        return stats


# --- coordinator ---------------------------------------------------------------------
def prepare_exports(model: str, engines: list[str], export_dir: str | None) -> dict[str, float]:
    """Build every export the engines need (cached), timing the ones that were cold."""
    from qembed.model.backends import load_backend
    from qembed.model.pipeline import load_pipeline
    from qembed.model.sources import resolve_model

    folder = resolve_model(model).path
    spec = load_pipeline(folder)
    seconds = {}
    for name in engines:
        cfg = ENGINES[name]
        if name == "st" or cfg["backend"] == "torch":
            continue
        t0 = time.perf_counter()
        backend = load_backend(
            cfg["backend"],
            folder,
            spec,
            device="cpu",
            dtype="auto",
            threads=1,
            quantize=cfg["quantize"],
            export_dir=export_dir,
        )
        seconds[name] = round(time.perf_counter() - t0, 1)
        del backend
    return seconds


def read_stsb(path: Path) -> tuple[list[float], list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [float(r["score"]) for r in rows], [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder or alias (minilm)")
    parser.add_argument("--engines", default="st,torch,onnx,onnx-int8,openvino,openvino-int8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passages", type=int, default=256, help="128-token passages per round (0: skip)")
    parser.add_argument("--documents", type=int, default=64, help="512-token documents per round (0: skip)")
    parser.add_argument("--queries", type=int, default=20, help="16-token single queries per round (0: skip)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--export-dir", default=None)
    parser.add_argument(
        "--quality", action="store_true", help="cosine to sentence-transformers float32 on the passages"
    )
    parser.add_argument("--stsb", type=Path, default=None, help="STS-B test TSV: Spearman per engine")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import numpy as np

    from qembed.bench.workloads import WorkloadBuilder, WorkloadSpec
    from qembed.model.sources import resolve_model

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    folder = resolve_model(args.model).path
    model = str(folder)
    builder = WorkloadBuilder(folder)
    workloads = {}
    for key, tokens, count in (("passage", 128, args.passages), ("document", 512, args.documents)):
        if count:
            workloads[key] = [
                builder.build(WorkloadSpec(key, tokens, count, key), variant=r).texts
                for r in range(args.rounds)
            ]
    queries = builder.build(WorkloadSpec("query", 16, max(1, args.queries) * args.rounds, "query")).texts

    print(
        f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores; load {os.getloadavg()}",
        flush=True,
    )
    export_seconds = prepare_exports(model, engines, args.export_dir)
    print("exports ready:", export_seconds, flush=True)

    workers: dict[str, Worker] = {}
    for name in engines:
        workers[name] = Worker(name, model, args.threads, args.export_dir)
        print(f"loaded {name}: {workers[name].info}", flush=True)

    times: dict[str, dict[str, list[float]]] = {w: {name: [] for name in engines} for w in workloads}
    latencies: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(args.rounds):
        order = engines[r % len(engines) :] + engines[: r % len(engines)]
        for key, variants in workloads.items():
            for name in order:
                times[key][name].append(workers[name].call("encode", variants[r], args.batch_size))
        if args.queries:
            chunk = queries[r * args.queries : (r + 1) * args.queries]
            for name in order:
                latencies[name].extend(workers[name].call("latency", chunk))
        print(f"round {r + 1}/{args.rounds} done; load {os.getloadavg()}", flush=True)

    quality: dict[str, dict[str, float]] = {name: {} for name in engines}
    if args.quality or args.stsb:
        texts = workloads["passage"][0] if "passage" in workloads else queries
        vecs = {name: np.asarray(workers[name].call("vectors", texts)) for name in engines}
        ref_name = "st" if "st" in vecs else engines[0]
        for name in engines:
            cos = (vecs[name] * vecs[ref_name]).sum(1) / (
                np.linalg.norm(vecs[name], axis=1) * np.linalg.norm(vecs[ref_name], axis=1)
            )
            quality[name]["mean_cos_to_" + ref_name] = round(float(cos.mean()), 5)
            quality[name]["min_cos_to_" + ref_name] = round(float(cos.min()), 5)
        if args.stsb:
            from scipy.stats import spearmanr

            gold, a, b = read_stsb(args.stsb)
            sts_vecs = {}
            for name in engines:
                va, vb = (
                    np.asarray(workers[name].call("vectors", a)),
                    np.asarray(workers[name].call("vectors", b)),
                )
                sts_vecs[name] = np.concatenate([va, vb])
                sims = (va * vb).sum(1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
                quality[name]["stsb_spearman"] = round(float(spearmanr(gold, sims).statistic * 100), 2)
            for name in engines:
                v, ref = sts_vecs[name], sts_vecs[ref_name]
                cos = (v * ref).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
                quality[name]["stsb_mean_cos_to_" + ref_name] = round(float(cos.mean()), 5)

    stats = {name: w.stop() for name, w in workers.items()}
    result: dict[str, Any] = {
        "model": model,
        "engines": {},
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "export_seconds_cold": export_seconds,
        "python": sys.version.split()[0],
    }
    tokens = {"passage": 128 * args.passages, "document": 512 * args.documents}
    base = "st" if "st" in engines else engines[0]
    for name in engines:
        row: dict[str, Any] = {**workers[name].info, **stats[name], **quality[name]}
        for key in workloads:
            med = statistics.median(times[key][name])
            row[f"{key}_tok_s"] = round(tokens[key] / med, 1)
            row[f"{key}_ratio"] = round(statistics.median(times[key][base]) / med, 2)
            row[f"{key}_round_ratios"] = [
                round(b / t, 2) for b, t in zip(times[key][base], times[key][name], strict=True)
            ]
        if latencies[name]:
            p50 = statistics.median(latencies[name])
            row["query_p50_ms"] = round(1000 * p50, 1)
            row["query_p50_speedup"] = round(statistics.median(latencies[base]) / p50, 2)
        result["engines"][name] = row

    cols = [
        c
        for c in (
            "passage_tok_s",
            "passage_ratio",
            "document_tok_s",
            "document_ratio",
            "query_p50_ms",
            "query_p50_speedup",
            "peak_rss_mb",
            "load_seconds",
        )
        if any(c in r for r in result["engines"].values())
    ]
    qcols = sorted({k for r in result["engines"].values() for k in r if k.startswith(("mean_cos", "stsb"))})
    print("\n| engine | dtype | " + " | ".join(cols + qcols) + " |")
    print("|---" * (len(cols) + len(qcols) + 2) + "|")
    for name, row in result["engines"].items():
        print(
            f"| {name} | {row.get('dtype')} | " + " | ".join(str(row.get(c, "")) for c in cols + qcols) + " |"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
