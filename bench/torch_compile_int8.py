"""torch int8 Linears with and without torch.compile, beside the bfloat16 forward (issue 17).

    .venv/bin/python bench/torch_compile_int8.py --model models/qwen3-0.6b-outliers

The torch int8 backend's layers (``Int8Linear``: per-token int8 activations x per-channel
int8 weights through ``torch._int_mm``, float32 around them, ``layers.0.`` kept in float)
run eagerly, so every quantize / rescale step and every unfused RMSNorm, rotary and SiLU op
is its own pass over memory. ``torch.compile`` (inductor, ``dynamic=True``) fuses those
into generated C++ loops. Each setting runs in a fresh process, one after another:
transformers bfloat16 (the baseline: sentence-transformers' fastest setting here), int8
eager, int8 compiled (the first call's compile time reported separately). SmoothQuant is
left out: it changes the weights' values, not the work. Printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

WORKLOADS = {"passage-128": (16, 128), "document-512": (4, 512), "query-16": (1, 16)}
MODES = ("bfloat16", "int8-eager", "int8-compiled")


def worker(folder: str, mode: str, rounds: int) -> dict[str, object]:
    import torch
    from transformers import AutoModel

    from qembed.model.backends.int8.torch_w8a8 import quantize_linears

    torch.manual_seed(0)
    dtype = torch.bfloat16 if mode == "bfloat16" else torch.float32
    model = AutoModel.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").eval()
    if mode != "bfloat16":
        quantize_linears(model, exclude=("layers.0.",))
    run = torch.compile(model, dynamic=True) if mode == "int8-compiled" else model
    inputs = {name: torch.randint(100, 150000, shape) for name, shape in WORKLOADS.items()}
    out: dict[str, object] = {"mode": mode, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        if mode == "int8-compiled":
            start = time.perf_counter()
            ids = inputs["query-16"]
            run(input_ids=ids, attention_mask=torch.ones_like(ids))
            out["first_call_s"] = round(time.perf_counter() - start, 1)
        for name, ids in inputs.items():
            mask = torch.ones_like(ids)
            run(input_ids=ids, attention_mask=mask)  # warm-up (and, compiled, any recompile)
            times = []
            for _ in range(rounds * (3 if name == "query-16" else 1)):
                start = time.perf_counter()
                run(input_ids=ids, attention_mask=mask)
                times.append(time.perf_counter() - start)
            if name == "query-16":
                out["query_p50_ms"] = round(statistics.median(times) * 1000, 1)
            else:
                out[f"{name}_tok_s"] = round(ids.numel() / min(times), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.worker, args.rounds)))
        return
    results = {}
    for mode in MODES:
        cmd = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--rounds",
            str(args.rounds),
            "--worker",
            mode,
        ]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[mode] = json.loads(line)
        print(line, flush=True)
    base = results["bfloat16"]
    for mode in MODES[1:]:
        r = results[mode]
        ratios = {
            "mode": mode,
            "x_bf16_passage_128": round(r["passage-128_tok_s"] / base["passage-128_tok_s"], 2),
            "x_bf16_document_512": round(r["document-512_tok_s"] / base["document-512_tok_s"], 2),
            "query_p50_ms": r["query_p50_ms"],
        }
        print(json.dumps(ratios), flush=True)


if __name__ == "__main__":
    main()
