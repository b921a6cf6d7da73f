"""Inference backends. Each turns padded token batches into pooled vectors.

=========  ===========================================  =========================  ==================
name       runs on                                      --quantize                 needs
=========  ===========================================  =========================  ==================
torch      transformers + torch (CPU or CUDA)           none, int8 (CPU, Linear)   (core)
onnx       ONNX Runtime, model exported by qembed (CPU)  none, int8 (dynamic)       ``qembed-server[onnx]``
openvino   OpenVINO, converted by qembed (CPU)          none, int8 (weights)       ``qembed-server[openvino]``
auto       the fastest measured backend that is installed, for the device
=========  ===========================================  =========================  ==================

``auto`` on CUDA is torch. On the CPU it takes the first installed entry of
``AUTO_CPU[quantize]``, an order measured with ``bench/cpu_backends.py`` (numbers in
docs/PERFORMANCE.md); with int8, the first whose build passes the int8 quality gate on the
model being loaded. Exports and conversions are cached next to the model (see
``artifacts``), so only the first start with a new backend pays for them.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from qembed.common.install import pip_install
from qembed.errors import InputError
from qembed.model.backends.base import Backend
from qembed.model.backends.int8.recipes import Int8Options
from qembed.model.pipeline import PipelineSpec

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZE = ("none", "int8")
# Python packages each backend imports (beyond the core dependencies).
REQUIRES: dict[str, tuple[str, ...]] = {
    "torch": (),
    "onnx": ("onnxruntime", "onnx", "onnxscript"),
    "openvino": ("openvino", "nncf"),
}
EXTRAS = {"onnx": pip_install("onnx"), "openvino": pip_install("openvino")}
# Fastest first, as measured with bench/cpu_backends.py on a 2-core AVX-512 VNNI CPU
# (docs/PERFORMANCE.md): int8 on the full-shape Qwen3-0.6B, 128-token passages: onnx 3.8x,
# openvino 3.0x, torch 1.9x sentence-transformers float32 (before the gated recipes; the
# 2026-12-01 direction check on the outlier fixture kept onnx ahead of torch int8, and torch's
# single-query latency is the worst of the three). With int8, ``auto`` takes the first of
# these whose build passes the gate on the model. float32: openvino ahead of onnx (MiniLM
# 1.40x vs 1.08x).
AUTO_CPU: dict[str, tuple[str, ...]] = {
    # int8: OpenVINO first (fastest of the gated builds on the full-shape outlier fixture:
    # 1.12x / 1.26x sentence-transformers bf16 at 128 / 512 tokens against onnx 0.93x / 1.17x,
    # query p50 60 vs 67 ms; bench/results/cpu-int8), then onnx, then torch.
    "int8": ("openvino", "onnx", "torch"),
    "none": ("openvino", "onnx", "torch"),
}


def missing_packages(name: str) -> list[str]:
    """The packages ``name`` needs that cannot be imported here."""
    return [pkg for pkg in REQUIRES.get(name, ()) if importlib.util.find_spec(pkg) is None]


def available_backends() -> list[str]:
    return [name for name in BACKENDS if not missing_packages(name)]


def resolve_backend(name: str, *, device: str, quantize: str = "none") -> str:
    """``auto`` -> a concrete backend name; other names are checked and returned."""
    if quantize not in QUANTIZE:
        raise InputError(
            f"quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}.", param="quantize"
        )
    if name == "auto":
        if device.startswith("cuda") or (device == "auto" and _cuda()):
            return "torch"
        return next(b for b in AUTO_CPU[quantize] if not missing_packages(b))
    if name not in BACKENDS:
        raise InputError(
            f"Unknown backend {name!r}; choose one of {', '.join(BACKENDS)} or auto.", param="backend"
        )
    missing = missing_packages(name)
    if missing:
        raise InputError(
            f"The {name} backend needs {', '.join(missing)}: {EXTRAS[name]} (or use --backend torch).",
            param="backend",
        )
    if name != "torch" and device not in ("auto", "cpu"):
        raise InputError(
            f"The {name} backend runs on the CPU; use --backend torch for {device}.", param="device"
        )
    return name


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_backend(
    name: str,
    folder: Path,
    spec: PipelineSpec,
    *,
    device: str,
    dtype: str,
    threads: int | None,
    quantize: str = "none",
    export_dir: str | None = None,
    progress: bool = True,
    int8: Int8Options | None = None,
) -> Backend:
    """Load ``folder`` on the named backend (``auto``: see the module docstring).

    ``int8``: the gate threshold and recipe overrides for ``quantize="int8"``; every int8
    build is measured on the calibration set and refused below the threshold
    (``qembed.model.backends.int8.gate``)."""
    chosen = resolve_backend(name, device=device, quantize=quantize)
    if name == "auto" and quantize == "int8" and chosen != "torch":
        return _first_int8_that_passes(
            folder,
            spec,
            device=device,
            dtype=dtype,
            threads=threads,
            export_dir=export_dir,
            progress=progress,
            int8=int8,
        )
    if name == "auto":
        log.info("backend auto -> %s (quantize %s)", chosen, quantize)
    return _load(
        chosen,
        folder,
        spec,
        device=device,
        dtype=dtype,
        threads=threads,
        quantize=quantize,
        export_dir=export_dir,
        progress=progress,
        int8=int8,
    )


def _first_int8_that_passes(folder: Path, spec: PipelineSpec, **kwargs) -> Backend:
    """``--backend auto --quantize int8`` on the CPU: the first installed backend of
    ``AUTO_CPU["int8"]`` whose int8 build passes the gate on THIS model (each build is
    measured once and cached, so later starts skip the refused ones at once)."""
    from qembed.errors import Int8QualityError

    refused: list[str] = []
    for candidate in (b for b in AUTO_CPU["int8"] if not missing_packages(b)):
        try:
            backend = _load(candidate, folder, spec, quantize="int8", **kwargs)
        except Int8QualityError as exc:
            log.warning(
                "backend auto: the %s int8 build misses the gate; trying the next backend (%s)",
                candidate,
                exc.message,
            )
            refused.append(f"{candidate}: {exc.message}")
            continue
        log.info("backend auto -> %s (quantize int8, passed the gate)", candidate)
        return backend
    raise Int8QualityError(
        "No int8 backend passes the quality gate on this model. " + " | ".join(refused), param="quantize"
    )


def _load(
    chosen: str,
    folder: Path,
    spec: PipelineSpec,
    *,
    device: str,
    dtype: str,
    threads: int | None,
    quantize: str,
    export_dir: str | None,
    progress: bool,
    int8: Int8Options | None,
) -> Backend:
    if chosen == "torch":
        if quantize == "int8":
            from qembed.model.backends.torch_int8 import TorchInt8Backend

            return TorchInt8Backend(
                folder,
                spec,
                device=device,
                dtype=dtype,
                threads=threads,
                int8=int8,
                export_dir=export_dir,
                progress=progress,
            )
        from qembed.model.backends.torch_backend import TorchBackend

        return TorchBackend(folder, spec, device=device, dtype=dtype, threads=threads)
    if chosen == "onnx":
        if dtype not in ("auto", "float32"):
            raise InputError(
                f"The onnx backend computes in float32 (or int8 with --quantize int8), not {dtype}.",
                param="dtype",
            )
        from qembed.model.backends.onnx_backend import OnnxBackend

        return OnnxBackend(
            folder,
            spec,
            quantize=quantize,
            threads=threads,
            export_dir=export_dir,
            progress=progress,
            int8=int8,
        )
    from qembed.model.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(
        folder,
        spec,
        quantize=quantize,
        dtype=dtype,
        threads=threads,
        export_dir=export_dir,
        progress=progress,
        int8=int8,
    )


__all__ = [
    "AUTO_CPU",
    "BACKENDS",
    "Backend",
    "available_backends",
    "load_backend",
    "missing_packages",
    "resolve_backend",
]
