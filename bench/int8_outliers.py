"""A quick interleaved in-process check of the int8 engines on one model (the full-shape
outlier fixture by default): qembed bf16 (``dtype=auto``) vs torch int8 vs onnx int8, 16 x
~128-token passages and 8 single ~16-token queries per round, 2 rounds. The int8 builds are
made (and gated) on first use. For published numbers use ``qembed bench throughput``
(bench/README.md); this is the short direction check quoted in docs/PERFORMANCE.md.

    qembed dev make-model --shape qwen3-0.6b --outliers 1 --out models/qwen3-0.6b-outliers
    .venv/bin/python bench/int8_outliers.py [MODEL] [--onnx-min-cosine 0.98]
"""

import argparse
import statistics
import time

from qembed import Embedder
from qembed.model.backends.int8.calibration import calibration_texts

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model", nargs="?", default="models/qwen3-0.6b-outliers")
parser.add_argument("--onnx-min-cosine", type=float, default=0.99, help="gate threshold for the onnx build")
args = parser.parse_args()
M = args.model
engines = {
    "bf16 (auto)": Embedder(M),
    "torch int8": Embedder(M, backend="torch", quantize="int8"),
    "onnx int8": Embedder(M, backend="onnx", quantize="int8", int8_min_cosine=args.onnx_min_cosine),
}
tok = engines["bf16 (auto)"].tokenizer.tokenizer
ids = tok("\n".join(calibration_texts("all")), add_special_tokens=False)["input_ids"]
passages = [tok.decode(ids[i * 127 : (i + 1) * 127]) for i in range(16)]
queries = [tok.decode(ids[5000 + i * 15 : 5000 + (i + 1) * 15]) for i in range(8)]
res = {k: {"tps": [], "q": []} for k in engines}
for r in range(2):  # rounds alternate the engines
    for name, e in engines.items():
        e.encode(passages[:2], long_text="truncate")
        t = time.perf_counter()
        out = e.encode(passages, batch_size=16, long_text="truncate")
        dt = time.perf_counter() - t
        n = sum(len(x) for x in e.tokenizer.content_ids(passages)) + len(passages)
        res[name]["tps"].append(n / dt)
        for q in queries:
            t = time.perf_counter()
            e.encode([q])
            res[name]["q"].append((time.perf_counter() - t) * 1e3)
        print(name, "round", r, f"{n / dt:.1f} tok/s", flush=True)
base = max(res["bf16 (auto)"]["tps"])
for name, v in res.items():
    print(
        f"{name:12s} passages best {max(v['tps']):7.1f} tok/s ({max(v['tps']) / base:.2f}x bf16)  query p50 {statistics.median(v['q']):7.1f} ms"
    )
