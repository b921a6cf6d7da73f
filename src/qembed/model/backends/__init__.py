"""Inference backends. Each turns padded token batches into pooled vectors."""

from __future__ import annotations

from pathlib import Path

from qembed.errors import InputError
from qembed.model.backends.base import Backend
from qembed.model.pipeline import PipelineSpec

BACKENDS = ("torch",)


def load_backend(name: str, folder: Path, spec: PipelineSpec, *, device: str, dtype: str, threads: int | None) -> Backend:
    """Load ``folder`` on the named backend."""
    if name in ("torch", "auto"):
        from qembed.model.backends.torch_backend import TorchBackend

        return TorchBackend(folder, spec, device=device, dtype=dtype, threads=threads)
    raise InputError(f"Unknown backend {name!r}; available: {', '.join(BACKENDS)}.", param="backend")


__all__ = ["BACKENDS", "Backend", "load_backend"]
