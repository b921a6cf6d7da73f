"""OpenVINO int8 run-time settings: what each does to the gate and to speed (issue 17).

    .venv/bin/python bench/openvino_settings.py --model models/qwen3-0.6b-outliers \
        --xml .../openvino-int8-*/model.xml [--setting NAME='{"KEY": value, "xml": PATH}' ...]

An OpenVINO int8 build (``qembed info --backend openvino --quantize int8``) is one IR; how
its int8 matmuls quantize activations (``DYNAMIC_QUANTIZATION_GROUP_SIZE``) and in which
precision the rest runs (``INFERENCE_PRECISION_HINT``) are chosen when it is compiled. Each
setting is compiled once, measured by the int8 gate (min / mean cosine to float32 on the
calibration set, as the build's manifest records it for the shipped setting) and timed in
interleaved rounds in one process: 16 x 128-token passages, 4 x 512-token documents (tok/s,
best round) and one 16-token query (p50 ms). A setting may name another build (``xml``);
``--symmetric-build DIR`` makes one like the shipped recipe but with NNCF's ``INT8_SYM``
weights (no zero points, which OpenVINO's int8 kernels skip work for) and adds it.
Compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

SHIPPED = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32}
DEFAULT_SETTINGS = {
    "shipped (f32, groups of 32)": SHIPPED,
    "bf16 rest, groups of 32": {**SHIPPED, "INFERENCE_PRECISION_HINT": "bf16"},
    "f32, groups of 64": {**SHIPPED, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 64},
    "f32, groups of 128": {**SHIPPED, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 128},
    "f32, no activation quantization": {**SHIPPED, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0},
}


def symmetric_build(folder: Path, out: Path) -> str:
    """The shipped OpenVINO recipe (SmoothQuant, ``keep``) with symmetric int8 weights: ``out/model.xml``."""
    xml = out / "model.xml"
    if xml.exists():
        return str(xml)
    import openvino as ov

    from qembed.model.backends.int8.prepare import smoothed_float32
    from qembed.model.backends.int8.recipes import DEFAULT_RECIPES
    from qembed.model.backends.openvino_backend import compress_int8, to_openvino
    from qembed.model.pipeline import load_pipeline

    spec = load_pipeline(folder)
    recipe = DEFAULT_RECIPES["openvino"]
    model, _ = smoothed_float32(folder, spec, recipe)
    converted = compress_int8(to_openvino(model, spec), recipe, mode="INT8_SYM")
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(converted, str(xml), compress_to_fp16=False)
    return str(xml)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the model folder the build was made from")
    parser.add_argument("--xml", required=True, help="the int8 build's model.xml")
    parser.add_argument("--setting", action="append", default=[], help="NAME='{\"KEY\": value}' (repeatable)")
    parser.add_argument(
        "--symmetric-build", type=Path, default=None, help="build (or reuse) INT8_SYM weights here"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write settings.json here")
    args = parser.parse_args()

    import openvino as ov

    from qembed.model.backends.int8 import gate
    from qembed.model.backends.openvino_backend import _run
    from qembed.model.backends.threads import intra_op_threads
    from qembed.model.pipeline import load_pipeline

    settings = dict(DEFAULT_SETTINGS)
    for item in args.setting:
        name, _, value = item.partition("=")
        settings[name] = json.loads(value)
    if args.symmetric_build:
        xml = symmetric_build(args.model, args.symmetric_build)
        settings["symmetric weights, groups of 32"] = {**SHIPPED, "xml": xml}
        settings["symmetric weights, groups of 128"] = {
            **SHIPPED,
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 128,
            "xml": xml,
        }
    spec = load_pipeline(args.model)
    rng = np.random.default_rng(0)
    workloads = {"passage-128": (16, 128), "document-512": (4, 512), "query-16": (1, 16)}
    batches = {}
    for name, (rows, width) in workloads.items():
        ids = rng.integers(100, 150000, size=(rows, width))
        batches[name] = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    core = ov.Core()
    requests, results = {}, {}
    for name, setting in settings.items():
        config = {
            "INFERENCE_NUM_THREADS": intra_op_threads(None),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        config.update({k: v for k, v in setting.items() if k != "xml"})
        request = core.compile_model(setting.get("xml", args.xml), "CPU", config).create_infer_request()
        quality = gate.measure(
            lambda ids, mask, r=request: _run(r, spec, ids, mask), args.model, spec, progress=False
        )
        requests[name] = request
        results[name] = {
            "setting": setting,
            "gate": quality,
            "passage-128": [],
            "document-512": [],
            "query-16": [],
        }
        print(f"{name}: gate min {quality['min_cosine']:.5f} mean {quality['mean_cosine']:.5f}", flush=True)
    for _ in range(args.rounds):
        for name, request in requests.items():
            for workload, inputs in batches.items():
                request.infer(inputs)
                repeats = 8 if workload == "query-16" else 1
                for _ in range(repeats):
                    start = time.perf_counter()
                    request.infer(inputs)
                    results[name][workload].append(time.perf_counter() - start)
    for name, r in results.items():
        tokens = {w: int(np.prod(workloads[w])) for w in workloads}
        r["passage_tok_s"] = round(tokens["passage-128"] / min(r.pop("passage-128")), 1)
        r["document_tok_s"] = round(tokens["document-512"] / min(r.pop("document-512")), 1)
        r["query_p50_ms"] = round(statistics.median(r.pop("query-16")) * 1000, 1)
        print(
            f"{name:34s} gate {r['gate']['min_cosine']:.5f}  128 tok {r['passage_tok_s']:7.1f} tok/s  "
            f"512 tok {r['document_tok_s']:7.1f} tok/s  query p50 {r['query_p50_ms']:6.1f} ms",
            flush=True,
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "settings.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
