"""How fast can int8 make this model on this CPU at best? (issue 17's speed targets)

    .venv/bin/python bench/int8_ceiling.py --model models/qwen3-0.6b-outliers \
        [--openvino .../openvino-int8-*/model.xml] [--out DIR]

An Amdahl bound from measured parts, not a model of any one backend. For each workload
(16 x 128-token passages, 4 x 512-token documents, one 16-token query):

- the transformers forward in bfloat16 (what sentence-transformers runs at its fastest
  setting here: the ratios' baseline), its best wall time, and from one profiled forward
  the share of it spent in the Linears (``aten::mm``/``addmm``);
- every Linear shape of the model alone at the workload's row count, as a bfloat16 matmul
  and as ``torch._int_mm`` (int8 x int8 -> int32: the fastest int8 kernel measured here,
  with no quantization, scaling or conversion around it). Their ratio is how much faster
  int8 makes a Linear at best.

``bound, rest bf16``: the Linears' share of the bf16 forward divided by that ratio, the
rest unchanged: the most any int8 scheme gains if everything but the Linears stays as
transformers runs it. Real backends add activation quantization and rescaling on top.

``--openvino XML`` (an int8 build's ``model.xml``) also profiles that build with OpenVINO's
per-operator counters: its Linear time (``FullyConnected*``) against the rest, which
OpenVINO fuses (RMSNorm, rotary, attention) and runs faster in float32 than transformers'
unfused bfloat16 ops. ``bound, OpenVINO's rest``: its rest plus the bf16 Linears at the
bare int8 kernel's ratio. Timings are best of rounds in one process; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

WORKLOADS = {"passage-128": (16, 128), "document-512": (4, 512), "query-16": (1, 16)}
LINEAR_OPS = ("aten::mm", "aten::addmm")


def _best_ms(call: Callable[[], object], rounds: int, repeats: int = 1) -> float:
    """Best of ``rounds`` means of ``repeats`` calls, after one warm-up call (ms)."""
    call()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        best = min(best, (time.perf_counter() - start) / repeats * 1000)
    return best


def linear_shapes(config) -> list[tuple[str, int, int]]:
    """(name, inputs, outputs) of one decoder layer's Linears (Qwen3 / Llama layout)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    return [
        ("q_proj", hidden, q),
        ("k_proj", hidden, kv),
        ("v_proj", hidden, kv),
        ("o_proj", q, hidden),
        ("gate_proj", hidden, inter),
        ("up_proj", hidden, inter),
        ("down_proj", inter, hidden),
    ]


def bare_linears_ms(shapes: list[tuple[str, int, int]], rows: int, rounds: int) -> dict[str, float]:
    """One layer's Linears alone at ``rows`` tokens (ms): bfloat16 matmuls vs bare int8 kernels."""
    import torch

    repeats = 20 if rows <= 64 else 2
    total = {"bfloat16": 0.0, "int8_int_mm": 0.0}
    for _, inputs, outputs in shapes:
        xb = torch.randn(rows, inputs).bfloat16()
        wb = (torch.randn(inputs, outputs) / inputs**0.5).bfloat16()
        xq = torch.randint(-127, 128, (rows, inputs), dtype=torch.int8)
        wq = torch.randint(-127, 128, (outputs, inputs), dtype=torch.int8).t()  # transposed, as Int8Linear
        total["bfloat16"] += _best_ms(lambda xb=xb, wb=wb: xb @ wb, rounds, repeats)
        total["int8_int_mm"] += _best_ms(lambda xq=xq, wq=wq: torch._int_mm(xq, wq), rounds, repeats)
    return total


def linear_share(call: Callable[[], object]) -> float:
    """Share of one profiled forward's operator time spent in the Linears' matmuls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in LINEAR_OPS) / total


def openvino_profile(xml: str, rows: int, width: int, rounds: int) -> dict[str, float]:
    """Wall time and per-operator split (Linears vs the rest) of one OpenVINO int8 forward (ms)."""
    import numpy as np
    import openvino as ov

    from qembed.model.backends.openvino_backend import DYNAMIC_QUANTIZATION_GROUP_SIZE

    config = {
        "INFERENCE_PRECISION_HINT": "f32",  # what qembed's int8 builds run (the gate is measured so)
        "INFERENCE_NUM_THREADS": os.cpu_count() or 1,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": DYNAMIC_QUANTIZATION_GROUP_SIZE,
        "PERF_COUNT": True,
    }
    request = ov.Core().compile_model(xml, "CPU", config).create_infer_request()
    ids = np.random.default_rng(0).integers(100, 150000, size=(rows, width))
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    best, split = float("inf"), {"linears": 0.0, "rest": 0.0}
    request.infer(inputs)
    for _ in range(rounds):
        start = time.perf_counter()
        request.infer(inputs)
        wall = (time.perf_counter() - start) * 1000
        if wall < best:
            best, split = wall, {"linears": 0.0, "rest": 0.0}
            for op in request.profiling_info:
                part = "linears" if op.node_type.startswith("FullyConnected") else "rest"
                split[part] += op.real_time.total_seconds() * 1000
    total = split["linears"] + split["rest"]
    return {
        "wall_ms": best,
        "linears_ms": best * split["linears"] / total,
        "rest_ms": best * split["rest"] / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Qwen3-architecture model folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--openvino", default=None, help="an OpenVINO int8 build's model.xml to profile")
    parser.add_argument("--out", type=Path, default=None, help="write ceiling.json and ceiling.md here")
    args = parser.parse_args()

    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(args.model, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    config = model.config
    shapes = linear_shapes(config)
    flops_per_token = 2 * sum(i * o for _, i, o in shapes) * config.num_hidden_layers
    report: dict[str, object] = {
        "model": args.model,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "workloads": {},
    }
    with torch.inference_mode():
        for name, (rows, width) in WORKLOADS.items():
            ids = torch.randint(100, int(config.vocab_size) - 1, (rows, width))
            mask = torch.ones_like(ids)

            def forward(ids=ids, mask=mask):
                return model(input_ids=ids, attention_mask=mask)

            wall = _best_ms(forward, args.rounds)
            share = linear_share(forward)
            bare = bare_linears_ms(shapes, rows * width, args.rounds)
            speedup = bare["bfloat16"] / bare["int8_int_mm"]  # int8 kernel vs bf16 matmul, same shapes
            linears, rest = wall * share, wall * (1 - share)
            tokens = rows * width
            entry: dict[str, object] = {
                "rows": rows,
                "tokens": width,
                "bf16_forward_ms": round(wall, 1),
                "bf16_linear_share": round(share, 3),
                "bare_kernel_gops": {
                    k: round(2 * tokens * sum(i * o for _, i, o in shapes) / (v / 1000) / 1e9, 1)
                    for k, v in bare.items()
                },
                "int8_kernel_speedup": round(speedup, 2),
                "bound_x_bf16_rest_bf16": round(wall / (rest + linears / speedup), 2),
                "floor_ms_rest_bf16": round(rest + linears / speedup, 1),
            }
            if args.openvino:
                ov = openvino_profile(args.openvino, rows, width, args.rounds)
                entry["openvino_int8"] = {
                    **{k: round(v, 1) for k, v in ov.items()},
                    "x_bf16": round(wall / ov["wall_ms"], 2),
                    "linear_gops": round(tokens * flops_per_token / (ov["linears_ms"] / 1000) / 1e9, 1),
                }
                entry["bound_x_bf16_openvino_rest"] = round(wall / (ov["rest_ms"] + linears / speedup), 2)
                entry["floor_ms_openvino_rest"] = round(ov["rest_ms"] + linears / speedup, 1)
            report["workloads"][name] = entry  # type: ignore[index]
            print(json.dumps({name: entry}), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ceiling.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "ceiling.md").write_text(_markdown(report))


def _markdown(report: dict) -> str:
    lines = [
        "# int8 ceiling on this CPU (bench/int8_ceiling.py)",
        "",
        f"model `{report['model']}`, torch {report['torch']}, {report['threads']} threads, "
        f"best of {report['rounds']} rounds, one process. Ratios are to the transformers bfloat16 forward.",
        "",
        "| workload | bf16 forward ms | Linears' share | bare kernels GOP/s bf16 / int8 (ratio) | "
        "bound, rest bf16 | OpenVINO int8 ms (x bf16) | its Linears ms (GOP/s) / rest ms | "
        "bound, OpenVINO's rest (floor ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["workloads"].items():
        k = e["bare_kernel_gops"]
        o = e.get("openvino_int8")
        ov = (
            f"{o['wall_ms']} ({o['x_bf16']:.2f}x) | {o['linears_ms']} ({o['linear_gops']:.0f}) / {o['rest_ms']} | "
            f"{e['bound_x_bf16_openvino_rest']:.2f}x ({e['floor_ms_openvino_rest']})"
            if o
            else "| |"
        )
        lines.append(
            f"| {name} | {e['bf16_forward_ms']} | {e['bf16_linear_share']:.0%} | "
            f"{k['bfloat16']:.0f} / {k['int8_int_mm']:.0f} ({e['int8_kernel_speedup']:.2f}x) | "
            f"{e['bound_x_bf16_rest_bf16']:.2f}x | {ov} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
