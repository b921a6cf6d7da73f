"""Reranking speed: 1 query x 20 documents, qembed's Reranker beside the references, interleaved.

    nice -n 10 .venv/bin/python bench/rerank.py --rounds 5 --out bench/results/cpu-rerank

Two model kinds, each against the code users would run instead:

- cross-encoder: ``qembed.Reranker`` vs ``sentence_transformers.CrossEncoder.predict`` on a
  random one-label BERT of cross-encoder/ms-marco-MiniLM-L6-v2's shape (6 layers, hidden 384;
  ``qembed dev make-model --kind cross-encoder --shape minilm``);
- Qwen3-Reranker: ``qembed.Reranker`` vs the model card's plain-transformers code
  (AutoModelForCausalLM, full logits, yes/no read-out) on a random Qwen3ForCausalLM of
  Qwen3-Reranker-0.6B's shape (``qembed dev make-model --kind reranker --shape qwen3-0.6b``;
  random weights = the true compute cost, meaningless scores).

Each round times one call of every engine in turn (interleaved, so load drifts hit all of
them alike), after one warm-up call each. Reported: p50 and min/max of a call's latency over
the rounds and pairs/s at the p50 (20 / p50). Same dtype (float32 by default) and threads for
all. Also checked: each pair of engines gives the same scores (max |difference|).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

QUERY = "How do Kubernetes pods get scheduled onto nodes?"
SENTENCES = [
    "The scheduler watches for newly created pods that have no node assigned.",
    "For every pod it discovers, the scheduler becomes responsible for finding the best node to run it on.",
    "Nodes that meet the scheduling requirements of a pod are called feasible nodes.",
    "Resource requests, affinity rules, taints and tolerations all narrow the set of feasible nodes.",
    "A Service exposes an application running on a set of pods as a network service.",
    "Gravity is a force that attracts two bodies towards each other.",
    "The capital of China is Beijing, a city with a history of more than three thousand years.",
    "Persistent volumes outlive the pods that mount them and keep data across restarts.",
    "Kubelet is the primary node agent; it registers the node with the API server.",
    "Horizontal pod autoscaling changes the number of replicas from observed CPU utilisation.",
    "A deployment provides declarative updates for pods and replica sets.",
    "Container images are pulled from a registry before the container starts.",
]


def documents(n: int = 20, sentences: int = 4) -> list[str]:
    """``n`` passages of ``sentences`` sentences each (about 70-90 tokens), deterministic."""
    rng = np.random.default_rng(0)
    return [
        " ".join(SENTENCES[j] for j in rng.choice(len(SENTENCES), sentences, replace=False)) for _ in range(n)
    ]


class CardQwen3:
    """The Qwen3-Reranker model card's code (plain transformers), as published."""

    def __init__(self, folder: Path, dtype: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from qembed.rerank import prompts

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()
        self.no = self.tokenizer.convert_tokens_to_ids("no")
        self.yes = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix = self.tokenizer.encode(prompts.PREFIX, add_special_tokens=False)
        self.suffix = self.tokenizer.encode(prompts.SUFFIX, add_special_tokens=False)
        self.max_length = 8192

    def __call__(self, query: str, docs: list[str]) -> np.ndarray:
        import torch

        task = "Given a web search query, retrieve relevant passages that answer the query"
        pairs = [f"<Instruct>: {task}\n<Query>: {query}\n<Document>: {d}" for d in docs]
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix) - len(self.suffix),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix + ele + self.suffix
        inputs = self.tokenizer.pad(inputs, padding=True, return_tensors="pt")
        with torch.no_grad():
            scores = self.model(**inputs).logits[:, -1, :]
            pair = torch.stack([scores[:, self.no], scores[:, self.yes]], dim=1)
            return torch.nn.functional.log_softmax(pair.float(), dim=1)[:, 1].exp().numpy()


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument(
        "--qwen-shape",
        default="qwen3-0.6b",
        help="make-model shape of the Qwen3-Reranker (tiny/small/qwen3-0.6b)",
    )
    ap.add_argument(
        "--reranker", type=Path, default=None, help="an existing Qwen3-Reranker folder (else one is built)"
    )
    ap.add_argument(
        "--cross-encoder", type=Path, default=None, help="an existing cross-encoder folder (else built)"
    )
    ap.add_argument("--skip-qwen", action="store_true", help="cross-encoders only")
    ap.add_argument("--out", type=Path, default=Path("bench/results/cpu-rerank"))
    args = ap.parse_args()

    import torch
    from sentence_transformers import CrossEncoder

    from qembed import Reranker
    from qembed.bench.machine import machine_info, versions
    from qembed.dev.make_model import make_cross_encoder, make_reranker

    work = Path(tempfile.mkdtemp(prefix="qembed-rerank-bench-"))
    ce_dir = args.cross_encoder or make_cross_encoder(work / "ms-marco-MiniLM-L6-shaped", shape="minilm")
    docs = documents(args.docs)
    threads = torch.get_num_threads()
    engines: dict[str, Callable[[], np.ndarray]] = {}
    qembed_ce = Reranker(ce_dir, device="cpu", dtype=args.dtype, threads=threads)
    st_ce = CrossEncoder(str(ce_dir), device="cpu", model_kwargs={"dtype": getattr(torch, args.dtype)})
    pairs = [(QUERY, d) for d in docs]
    engines["cross-encoder: qembed Reranker.score"] = lambda: qembed_ce.score(pairs)
    engines["cross-encoder: sentence-transformers CrossEncoder.predict"] = lambda: np.asarray(
        st_ce.predict(pairs, batch_size=32)
    )
    if not args.skip_qwen:
        t0 = time.perf_counter()
        qwen_dir = args.reranker or make_reranker(
            work / f"Qwen3-Reranker-{args.qwen_shape}-random", shape=args.qwen_shape
        )
        print(f"Qwen3-Reranker folder ready in {time.perf_counter() - t0:.0f} s: {qwen_dir}", flush=True)
        qembed_qwen = Reranker(
            qwen_dir, device="cpu", dtype=args.dtype, threads=threads, kind="qwen3-reranker"
        )
        card = CardQwen3(qwen_dir, getattr(torch, args.dtype))
        engines["Qwen3-Reranker: qembed Reranker.score"] = lambda: qembed_qwen.score(pairs)
        engines["Qwen3-Reranker: model card (plain transformers)"] = lambda: card(QUERY, docs)
    outputs = {}
    for name, fn in engines.items():  # warm-up, and the scores compared
        seconds, outputs[name] = _time(fn)
        print(f"warm-up {name}: {seconds * 1000:.0f} ms", flush=True)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(args.rounds):
        for name, fn in engines.items():
            seconds, _ = _time(fn)
            times[name].append(seconds)
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{n.split(': ')[1]} {t[-1] * 1000:.0f} ms" for n, t in times.items()),
            flush=True,
        )
    names = list(engines)
    agreement = {
        "cross-encoder": float(np.abs(outputs[names[0]] - outputs[names[1]]).max()),
        **(
            {"qwen3-reranker": float(np.abs(outputs[names[2]] - outputs[names[3]]).max())}
            if not args.skip_qwen
            else {}
        ),
    }
    rows = []
    for name, ts in times.items():
        p50 = statistics.median(ts)
        rows.append(
            {
                "engine": name,
                "p50_ms": round(p50 * 1000, 1),
                "min_ms": round(min(ts) * 1000, 1),
                "max_ms": round(max(ts) * 1000, 1),
                "pairs_per_s": round(args.docs / p50, 1),
                "rounds_ms": [round(t * 1000, 1) for t in ts],
            }
        )
    tokens = {
        "cross-encoder": int(np.mean(qembed_ce.count_tokens(pairs))),
        **({"qwen3-reranker": int(np.mean(qembed_qwen.count_tokens(pairs)))} if not args.skip_qwen else {}),
    }
    report = {
        "workload": f"1 query x {args.docs} documents per call",
        "mean_tokens_per_pair": tokens,
        "dtype": args.dtype,
        "threads": threads,
        "rounds": args.rounds,
        "qwen_shape": None if args.skip_qwen else args.qwen_shape,
        "cross_encoder_shape": "minilm (6 layers, hidden 384), random weights",
        "max_abs_score_difference": agreement,
        "results": rows,
        "load_average_at_start": os.getloadavg(),
        "machine": machine_info(),
        "versions": versions(),
        "platform": platform.platform(),
        "command": "nice -n 10 .venv/bin/python bench/rerank.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v not in (None, False) and k != "out"
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rerank.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [
        "# Reranking: 1 query x 20 documents (CPU)",
        "",
        f"`{report['command']}`",
        "",
        f"dtype {args.dtype}, {threads} threads, {args.rounds} interleaved rounds after one warm-up call each; "
        f"mean tokens per pair: {tokens}; load average at start: {report['load_average_at_start']}.",
        "",
        "| engine | p50 ms | min-max ms | pairs/s (at p50) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['engine']} | {r['p50_ms']} | {r['min_ms']}-{r['max_ms']} | {r['pairs_per_s']} |" for r in rows
    ]
    lines += [
        "",
        f"Same scores: max |difference| between the engines of a kind: {agreement}.",
        "Random weights: the compute cost is the real models', the scores mean nothing.",
    ]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)  # the built folders (1.2 GB for the full Qwen3 shape)


if __name__ == "__main__":
    main()
