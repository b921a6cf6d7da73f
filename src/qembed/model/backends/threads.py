"""How many threads a backend may use, and keeping runtimes from fighting over cores.

A model batch already saturates every core it is given, so the right number of
intra-op threads is the number of cores this process may run on (cgroup/affinity aware,
not the machine's total) and inter-op parallelism is one: two operators running side by
side on a 2-core machine only evict each other's caches. Oversubscription is the usual
way a CPU server loses half its speed: torch's OpenMP pool, ONNX Runtime's pool and the
tokenizer's rayon pool each default to "all cores", and spinning OpenMP workers of an
idle runtime steal time from the busy one. So each backend sizes its own pool from
``intra_op_threads`` and never wakes torch's pool when it does not run torch.
"""

from __future__ import annotations

from qembed.model.backends.hardware import available_cores


def intra_op_threads(threads: int | None) -> int:
    """The ``--threads`` setting, or every available core."""
    return max(1, int(threads)) if threads else available_cores()
