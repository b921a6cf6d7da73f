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

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
PACKAGES = (
    "qembed", "torch", "transformers", "tokenizers", "sentence-transformers", "numpy", "httpx", "uvicorn", "fastapi",
    "safetensors", "onnxruntime", "optimum", "openvino", "llama-cpp-python", "psutil", "matplotlib",
)


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX). Without it torch emulates
    bf16 matmuls and they run several times slower than float32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


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
            out.append({"index": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}"})
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
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out.update(extra or {})
    return out


def gemm_rate(*, dtype: str = "float32", device: str = "cpu", threads: int | None = None, n: int = 2048, seconds: float = 2.0) -> dict[str, Any]:
    """FLOP/s of an n x n x n matrix multiply, best of repeated runs for ``seconds``.

    The best run, not the mean: it is what the hardware can do when nothing interferes,
    which is the denominator MFU (model FLOPs utilisation) is defined against."""
    import torch

    if device == "cpu":
        torch.set_num_threads(threads or available_cores())
    dt = getattr(torch, dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    torch.mm(a, b)
    sync()
    best, times = 0.0, []
    deadline = time.perf_counter() + seconds
    while True:
        began = time.perf_counter()
        torch.mm(a, b)
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
