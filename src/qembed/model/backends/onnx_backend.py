"""The ONNX Runtime backend (CPU): float32, or int8 measured by the quality gate.

The model is exported by qembed itself (``onnx_export``) on first use and cached
(``artifacts``); later starts load the cached file in seconds.

Session settings, and why:

- ``intra_op_num_threads`` = the cores this process may use (``--threads``), and
  ``inter_op_num_threads`` = 1 with sequential execution: a transformer is a chain, there
  is nothing to run side by side, and a second pool would oversubscribe the cores;
- full graph optimization (ONNX Runtime fuses DynamicQuantizeLinear + MatMulInteger into
  one kernel, SiLU, and the MatMul+Transpose pairs of attention);
- pooling in numpy, not torch, so torch's OpenMP pool never wakes up next to ONNX
  Runtime's (``pooling_np``).

Tolerance against torch float32: float32 cos >= 0.9999 per vector; int8: the gate
(``int8.gate``, min cos >= 0.99 on the calibration set; docs/PERFORMANCE.md has the measured
values). int8 activations are quantized by one of three schemes (``Int8Recipe.activations``):
per tensor (ONNX Runtime's dynamic quantization, one scale per batch: a vector can move with
its batch-mates), per token (``int8.onnx_per_token``) or per token and block of 128 channels
(``int8.onnx_blockwise``, ONNX Runtime's MatMulNBits), which ``auto`` falls back to when per
tensor misses the gate.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from qembed.errors import ModelError
from qembed.model.backends.artifacts import Stage, cached_artifact, library_versions, read_manifest
from qembed.model.backends.int8.recipes import DEFAULT_MIN_COSINE, DEFAULT_RECIPES, Int8Options, Int8Recipe
from qembed.model.backends.pooling_np import pool_numpy
from qembed.model.backends.threads import intra_op_threads
from qembed.model.pipeline import LAST_TOKEN_MODEL_TYPES, PipelineSpec

log = logging.getLogger(__name__)

# int8 weights per output channel (per tensor lost too much on MiniLM: docs/PERFORMANCE.md).
INT8_PER_CHANNEL = True
# activations "auto": the per-tensor build is kept when its gate minimum reaches this.
AUTO_MIN_COSINE = DEFAULT_MIN_COSINE
# What ``auto`` builds when per-tensor misses the gate.
AUTO_FALLBACK = "per-token-group"


def _versions() -> dict[str, str | None]:
    return library_versions("torch", "transformers", "onnx", "onnxscript", "onnxruntime")


def onnx_float32(
    folder: Path, spec: PipelineSpec, *, export_dir: str | None = None, progress: bool = True
) -> Path:
    """The cached float32 ONNX export of ``folder`` (built on first use)."""
    from qembed.model.backends.onnx_export import MODEL_FILE, export_float32

    def build(tmp: Path, stage: Stage) -> None:
        with stage("export to ONNX and check against torch"):
            info = export_float32(folder, tmp, spec=spec)
        log.info("ONNX export of %s: %s", folder, info)

    recipe = {
        "dtype": "float32",
        "padding_side": spec.padding_side,
        "model_type": spec.model_type,
        "versions": _versions(),
    }
    return (
        cached_artifact(
            "onnx-float32", folder, recipe, build, steps=1, export_dir=export_dir, progress=progress
        )
        / MODEL_FILE
    )


def session(path: Path, threads: int | None):
    """An ONNX Runtime session with the settings in the module docstring."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # the quantized graph's shape-inference notes are noise
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_int8(
    folder: Path,
    spec: PipelineSpec,
    *,
    recipe: Int8Recipe | None = None,
    threads: int | None = None,
    export_dir: str | None = None,
    progress: bool = True,
) -> Path:
    """The cached int8 ONNX model of ``folder``: SmoothQuant (``recipe.alpha``) folded into the
    float32 weights, the MatMuls quantized by ``recipe.activations`` (per tensor, per token or
    per token-group; ``auto`` tries per tensor first), measured by the int8 gate; the
    measurement is in the manifest (``quality``)."""
    from qembed.model.backends.int8 import gate
    from qembed.model.backends.int8.onnx_blockwise import quantize_blockwise
    from qembed.model.backends.int8.onnx_per_token import quantize_per_token
    from qembed.model.backends.int8.prepare import smoothed_float32
    from qembed.model.backends.onnx_export import MODEL_FILE, export_float32, quantize_int8

    recipe = recipe or DEFAULT_RECIPES["onnx"]

    def build(tmp: Path, stage: Stage) -> dict[str, object]:
        smoothing: dict[str, object] = {"alpha": None}
        if recipe.alpha:
            with stage(f"SmoothQuant (alpha {recipe.alpha}) and float32 export"):
                staging = tmp / "float32"
                model, smoothing = smoothed_float32(folder, spec, recipe)
                export_float32(folder, staging, spec=spec, model=model)
                del model
                source = staging / MODEL_FILE
        else:
            with stage("float32 export"):
                source = onnx_float32(folder, spec, export_dir=export_dir, progress=False)

        def quantized(activations: str) -> dict[str, Any]:
            """Quantize ``source`` into tmp with one activation scheme and measure it."""
            for old in tmp.glob(MODEL_FILE + "*"):
                old.unlink()
            if activations == "per-tensor":
                with stage("int8 dynamic quantization (per-tensor activations)"):
                    quantize_int8(source, tmp, exclude=recipe.keep, per_channel=INT8_PER_CHANNEL)
            elif activations == "per-token-group":
                with stage("int8 MatMulNBits with per-token-group activations"):
                    quantize_blockwise(source, tmp / MODEL_FILE, exclude=recipe.keep)
            else:
                with stage("int8 MatMuls with per-token activations"):
                    quantize_per_token(source, tmp / MODEL_FILE, exclude=recipe.keep)
            with stage(f"int8 quality gate ({activations}: calibration set vs float32)"):
                sess = session(tmp / MODEL_FILE, threads)
                return gate.measure(
                    lambda ids, mask: _run(sess, spec, ids, mask),
                    folder,
                    spec,
                    export_dir=export_dir,
                    progress=False,
                )

        if recipe.activations == "auto":
            # The fastest scheme that holds: ONNX Runtime's fused per-tensor kernel when it
            # passes the default gate on this model, else per-token groups (MatMulNBits: the
            # most accurate scheme, measured in docs/PERFORMANCE.md).
            tried = {"per-tensor": quantized("per-tensor")}
            chosen = "per-tensor"
            if float(tried["per-tensor"]["min_cosine"]) < AUTO_MIN_COSINE:
                tried[AUTO_FALLBACK] = quantized(AUTO_FALLBACK)
                chosen = AUTO_FALLBACK
            quality = {
                **tried[chosen],
                "activations": chosen,
                "tried": {k: v["min_cosine"] for k, v in tried.items()},
            }
        else:
            quality = {**quantized(recipe.activations), "activations": recipe.activations}
        shutil.rmtree(tmp / "float32", ignore_errors=True)
        return {"quality": quality, "smoothquant": smoothing}

    key = {
        "dtype": "int8",
        "scheme": "MatMul with constant B: int8 weights per output channel (per-token-group: per block of 128 too)",
        **recipe.as_dict(),
        **({"auto_fallback": AUTO_FALLBACK} if recipe.activations == "auto" else {}),
        "padding_side": spec.padding_side,
        "model_type": spec.model_type,
        "versions": _versions(),
    }
    return (
        cached_artifact("onnx-int8", folder, key, build, steps=5, export_dir=export_dir, progress=progress)
        / MODEL_FILE
    )


def _run(
    sess,
    spec: PipelineSpec,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    ids = np.ascontiguousarray(input_ids, dtype=np.int64)
    mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
    states = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return pool_numpy(states, mask, spec.pooling, skip)


class OnnxBackend:
    """``embed`` through an ONNX Runtime session on the CPU."""

    name = "onnx"

    def __init__(
        self,
        folder: Path,
        spec: PipelineSpec,
        *,
        quantize: str = "none",
        threads: int | None = None,
        export_dir: str | None = None,
        progress: bool = True,
        int8: Int8Options | None = None,
    ) -> None:
        from qembed.model.backends.int8.gate import enforce

        self.spec = spec
        self.device = "cpu"
        self.dtype = "int8" if quantize == "int8" else "float32"
        self.quality: dict[str, object] | None = None
        if quantize == "int8":
            int8 = int8 or Int8Options()
            path = onnx_int8(
                folder,
                spec,
                recipe=int8.recipe("onnx", decoder=spec.model_type in LAST_TOKEN_MODEL_TYPES),
                threads=threads,
                export_dir=export_dir,
                progress=progress,
            )
            manifest = read_manifest(path.parent)
            self.quality = manifest.get("quality")
            self.recipe = {**manifest.get("recipe", {}), "smoothquant": manifest.get("smoothquant")}
            enforce(self.quality, min_cosine=int8.min_cosine, backend="onnx", model=str(folder))
        else:
            path = onnx_float32(folder, spec, export_dir=export_dir, progress=progress)
        try:
            self.session = session(path, threads)
        except Exception as exc:  # noqa: BLE001 - a damaged cache must say where it is
            raise ModelError(
                f"ONNX Runtime cannot load {path} ({exc}); delete {path.parent} to export again."
            ) from exc
        self.path = path
        log.info("loaded %s on onnxruntime (%s, %d threads)", path, self.dtype, intra_op_threads(threads))

    def embed(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, skip: np.ndarray | None = None
    ) -> np.ndarray:
        return _run(self.session, self.spec, input_ids, attention_mask, skip)
