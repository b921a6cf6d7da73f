"""The int8 quality gate: an int8 model is measured on the user's own weights before it serves.

Every int8 build (onnx, openvino, torch) embeds the ``gate`` split of the shipped
calibration set (``calibration``) and compares each vector with the float32 torch
reference of the same weights. The minimum and mean cosine are written into the build's
manifest (so the measurement runs once per export, not at every start), shown in
``/info`` and the bench report, and checked against ``--int8-min-cosine`` every time the
build is loaded: below it qembed refuses to serve and says by how much, and what to do.
A silently lossy model is never served.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qembed.errors import Int8QualityError
from qembed.model.backends.artifacts import Stage, cached_artifact, library_versions
from qembed.model.backends.int8.calibration import calibration_file, calibration_texts, token_batches
from qembed.model.pipeline import PipelineSpec

log = logging.getLogger(__name__)

Embed = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ids, mask) -> pooled [rows, dim]
REFERENCE_FILE = "vectors.npy"


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def gate_batches(folder: Path, spec: PipelineSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    return token_batches(folder, spec, calibration_texts("gate"))


def embed_all(embed: Embed, batches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.asarray(embed(ids, mask), dtype=np.float32) for ids, mask in batches])


def reference_vectors(
    folder: Path, spec: PipelineSpec, *, export_dir: str | None = None, progress: bool = True
) -> np.ndarray:
    """float32 torch vectors of the gate texts (cached: every int8 backend compares with them)."""
    digest = hashlib.sha256(calibration_file().read_bytes()).hexdigest()[:16]
    recipe = {
        "texts": digest,
        "pooling": spec.pooling,
        "padding_side": spec.padding_side,
        "versions": library_versions("torch", "transformers"),
    }

    def build(tmp: Path, stage: Stage) -> None:
        from qembed.model.backends.torch_backend import TorchBackend

        with stage("float32 reference vectors of the calibration set"):
            backend = TorchBackend(folder, spec, device="cpu", dtype="float32")
            np.save(tmp / REFERENCE_FILE, embed_all(backend.embed, gate_batches(folder, spec)))

    path = cached_artifact(
        "reference-float32", folder, recipe, build, steps=1, export_dir=export_dir, progress=progress
    )
    return np.load(path / REFERENCE_FILE)


def measure(
    embed: Embed, folder: Path, spec: PipelineSpec, *, export_dir: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Cosine of ``embed``'s vectors to the float32 reference on the gate texts."""
    want = _normalize(reference_vectors(folder, spec, export_dir=export_dir, progress=progress))
    got = embed_all(embed, gate_batches(folder, spec))
    if not np.isfinite(got).all():
        cos = np.full(len(want), -1.0)
    else:
        cos = (want * _normalize(got)).sum(1)
    quality = {
        "reference": "torch float32",
        "texts": int(len(cos)),
        "min_cosine": round(float(cos.min()), 6),
        "mean_cosine": round(float(cos.mean()), 6),
        "p01_cosine": round(float(np.quantile(cos, 0.01)), 6),
        "calibration_set": calibration_file().name,
    }
    log.info(
        "int8 gate: min cosine %.4f, mean %.4f over %d texts",
        quality["min_cosine"],
        quality["mean_cosine"],
        len(cos),
    )
    return quality


def enforce(quality: dict[str, Any] | None, *, min_cosine: float, backend: str, model: str) -> None:
    """Refuse an int8 build whose measured minimum cosine is below ``min_cosine``."""
    if not quality:
        raise Int8QualityError(
            f"The {backend} int8 build of {model} carries no quality measurement (an export from an older qembed); "
            "delete it (the path is in the log) so that it is rebuilt and measured."
        )
    got = float(quality["min_cosine"])
    if got >= min_cosine:
        return
    accept = math.floor(got * 1e4) / 1e4
    raise Int8QualityError(
        f"Refusing to serve the {backend} int8 build of {model}: on qembed's calibration set ({quality['texts']} texts) "
        f"its vectors reach min cosine {got:.5f} (mean {float(quality['mean_cosine']):.5f}) to float32, below the "
        f"threshold {min_cosine:.5f}. Serve it without int8 (drop --quantize int8; --dtype bfloat16 is the fast "
        f"lossless choice on CPUs with native bf16), try another int8 backend (--backend openvino|onnx|torch), "
        f"or accept the loss knowingly with --int8-min-cosine {accept:.4f}.",
        param="quantize",
    )
