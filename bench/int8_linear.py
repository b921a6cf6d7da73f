"""Where one int8 Linear's time goes, and what glibc's allocator costs it (issue 17).

    .venv/bin/python bench/int8_linear.py [--rows 2048 --inputs 1024 --outputs 3072]

Times ``Int8Linear`` (per-token int8 activations x per-channel int8 weights, the torch int8
backend's layer) at one MLP shape of Qwen3-0.6B against its own ``torch._int_mm`` alone and
a bfloat16 ``nn.Linear``, each in a fresh process twice: with glibc's default allocator
settings, and with ``mallopt`` keeping freed memory in the process (trim threshold 1 GiB,
mmap threshold 32 MiB). With the defaults every forward's ~24 MB int32 output and float
copies are fresh ``mmap`` pages, page-faulted in again on each call. Compare the ratios
within one run; the report is printed as JSON lines.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import time
from collections.abc import Callable

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _ms(call: Callable[[], object], repeats: int) -> float:
    """Best of three means (ms): the least disturbed by other work on the machine."""
    call()
    best = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        best.append((time.perf_counter() - start) / repeats * 1000)
    return min(best)


def worker(rows: int, inputs: int, outputs: int, keep: bool, repeats: int) -> dict[str, object]:
    if keep:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_TRIM_THRESHOLD, 2**30)
        libc.mallopt(M_MMAP_THRESHOLD, 2**25)
    import torch

    from qembed.model.backends.int8.torch_w8a8 import Int8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(inputs, outputs, bias=False)
    int8 = Int8Linear(linear)
    x = torch.randn(rows, inputs)
    xq = torch.randint(-127, 128, (rows, inputs), dtype=torch.int8)
    bf16, xb = linear.bfloat16(), x.bfloat16()
    with torch.inference_mode():
        return {
            "malloc_keep": keep,
            "threads": torch.get_num_threads(),
            "int8_linear_ms": round(_ms(lambda: int8(x), repeats), 2),
            "int_mm_only_ms": round(_ms(lambda: torch._int_mm(xq, int8.weight_t), repeats), 2),
            "bf16_linear_ms": round(_ms(lambda: bf16(xb), repeats), 2),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2048, help="tokens in the batch (16 x 128)")
    parser.add_argument("--inputs", type=int, default=1024)
    parser.add_argument("--outputs", type=int, default=3072)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--worker", choices=["default", "keep"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.rows, args.inputs, args.outputs, args.worker == "keep", args.repeats)
        print(json.dumps(result))
        return 0
    shape = ["--rows", str(args.rows), "--inputs", str(args.inputs), "--outputs", str(args.outputs)]
    for mode in ("default", "keep", "default", "keep"):
        out = subprocess.run(
            [sys.executable, __file__, *shape, "--repeats", str(args.repeats), "--worker", mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        print(out.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
