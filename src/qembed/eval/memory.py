"""Peak memory of one evaluation target, measured in this process.

``ru_maxrss`` only knows the peak of the whole process life, so when ``qembed eval
compare`` loads several models one after another every later model would inherit the
first one's peak. On Linux the peak (``VmHWM``) can be reset by writing ``5`` to
``/proc/self/clear_refs``; we do that when a target starts, which gives each target its
own peak. Elsewhere we fall back to ``ru_maxrss`` and say so in ``method``.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _cuda_module():  # torch only when it is already imported: never pay its import for HTTP targets
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


@dataclass
class PeakMemory:
    """Peak resident memory (and CUDA memory) since ``start()``."""

    method: str = "unstarted"
    baseline_bytes: int | None = None

    def start(self) -> None:
        if _reset_hwm() and _status_kib("VmHWM") is not None:
            self.method = "VmHWM since start"
        else:
            self.method = "ru_maxrss (whole process)"
        rss = _status_kib("VmRSS")
        self.baseline_bytes = rss * 1024 if rss is not None else None
        cuda = _cuda_module()
        if cuda is not None:
            cuda.reset_peak_memory_stats()

    def peak_rss_bytes(self) -> int:
        if self.method.startswith("VmHWM"):
            hwm = _status_kib("VmHWM")
            if hwm is not None:
                return hwm * 1024
        return _ru_maxrss_bytes()

    def peak_cuda_bytes(self) -> int | None:
        cuda = _cuda_module()
        return None if cuda is None else int(cuda.max_memory_allocated())
