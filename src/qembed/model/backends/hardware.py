"""What the machine this process runs on offers: usable cores and native number formats.

Both decide defaults: the thread count (cores this process may run on, cgroup/affinity
aware) and the CPU dtype (bf16 only where the CPU computes it natively: with AVX512-BF16
or AMX a bf16 matmul runs about twice as fast as float32; without them torch emulates it
and it runs several times slower).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def available_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the CPU (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)
