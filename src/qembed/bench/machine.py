"""What a reader needs to judge a benchmark number: the machine, the software, its matmul rate.

A tokens/s figure is only comparable with the conditions it was measured under. The
report therefore records the CPU model and flags (bf16 and int8 instructions decide which
dtype and backend are fastest), the cores this process may use, memory, GPUs, the load
average when the run began (other work on the machine), every relevant library version,
and the machine's measured matrix-multiply rate, which MFU divides by.
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import qembed
from qembed.model.backends.hardware import available_cores, cpu_flags, native_bf16

INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
)
PACKAGES = (
    "qembed",
    "torch",
    "transformers",
    "tokenizers",
    "sentence-transformers",
    "numpy",
    "httpx",
    "uvicorn",
    "fastapi",
    "safetensors",
    "onnxruntime",
    "optimum",
    "openvino",
    "llama-cpp-python",
    "psutil",
    "matplotlib",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def gpus() -> list[dict[str, Any]]:
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append(
                {
                    "index": i,
                    "name": props.name,
                    "memory_gb": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
        return out
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        return []


def machine_info() -> dict[str, Any]:
    flags = cpu_flags()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_available": available_cores(),
        "memory_gb": round((memory_bytes() or 0) / 2**30, 1),
        "cpu_flags": sorted(flags & set(INTERESTING_FLAGS)),
        "native_bf16": native_bf16(),
        "gpus": gpus(),
    }
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    try:
        import torch

        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    return info


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            # qembed's own version from the package: the distribution's name (qembed-server) may differ
            out[name] = qembed.__version__ if name == "qembed" else metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out.update(extra or {})
    return out


def gemm_rate(
    *,
    dtype: str = "float32",
    device: str = "cpu",
    threads: int | None = None,
    n: int = 2048,
    seconds: float = 2.0,
) -> dict[str, Any] | None:
    """FLOP/s (int8: integer op/s) of an n x n x n matrix multiply, best of repeated runs
    for ``seconds``; None when this torch build has no such kernel on the device.

    The best run, not the mean: it is what the hardware can do when nothing interferes,
    which is the denominator MFU (model FLOPs utilisation) is defined against. int8 runs
    ``torch._int_mm`` (int8 x int8 -> int32, the kernel class that int8 backends use)."""
    import torch

    if device == "cpu":
        torch.set_num_threads(threads or available_cores())
    gen = torch.Generator(device="cpu").manual_seed(0)
    if dtype == "int8":
        if not hasattr(torch, "_int_mm"):
            return None
        a = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8).to(device)
        b = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8).to(device)

        def mm() -> Any:
            return torch._int_mm(a, b)
    else:
        dt = getattr(torch, dtype)
        a = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)
        b = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)

        def mm() -> Any:
            return torch.mm(a, b)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    try:
        mm()
    except RuntimeError:  # no kernel for this dtype on this device
        return None
    sync()
    best, times = 0.0, []
    deadline = time.perf_counter() + seconds
    while True:
        began = time.perf_counter()
        mm()
        sync()
        took = time.perf_counter() - began
        times.append(took)
        best = max(best, 2 * n**3 / took)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    times.sort()
    return {
        "dtype": dtype,
        "device": device,
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "n": n,
        "runs": len(times),
        "best_gflops": round(best / 1e9, 2),
        "median_gflops": round(2 * n**3 / times[len(times) // 2] / 1e9, 2),
    }


def gemm_reference(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One dtype's MFU denominator from samples taken through the run: the best of them.

    Sampling before the first round and after every round, beside the engines, puts the
    reference under the same conditions as the engines: a rate measured once while the
    machine is busy and then compared with an engine that ran in a quiet moment would put
    MFU above 100%."""
    best = max(samples, key=lambda g: g["best_gflops"])
    return {
        **{k: best[k] for k in ("dtype", "device", "threads", "n")},
        "best_gflops": best["best_gflops"],
        "median_gflops": round(sorted(g["median_gflops"] for g in samples)[len(samples) // 2], 2),
        "runs": sum(g["runs"] for g in samples),
        "samples": len(samples),
        "sample_best_gflops": [g["best_gflops"] for g in samples],
    }
