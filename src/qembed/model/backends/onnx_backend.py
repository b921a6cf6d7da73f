"""The ONNX Runtime backend (CPU): float32, or int8 with dynamic quantization.

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

Tolerance against torch float32: float32 cos >= 0.9999 per vector; int8 cos >= 0.99 (see
docs/PERFORMANCE.md for the measured values and the STS-B gate). int8 activations are
quantized per tensor, over the whole batch, so an int8 vector can move slightly with its
batch-mates (well inside that tolerance).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from qembed.errors import ModelError
from qembed.model.backends.artifacts import Stage, cached_artifact, library_versions
from qembed.model.backends.pooling_np import pool_numpy
from qembed.model.backends.threads import intra_op_threads
from qembed.model.pipeline import PipelineSpec

log = logging.getLogger(__name__)

# Linear layers kept in float32 by the int8 recipe (module-path substrings); empty = all
# quantized. The MiniLM gate passes with every Linear in int8; see docs/PERFORMANCE.md.
INT8_EXCLUDE: tuple[str, ...] = ()
INT8_PER_CHANNEL = True


def _versions() -> dict[str, str | None]:
    return library_versions("torch", "transformers", "onnx", "onnxscript", "onnxruntime")


def onnx_float32(folder: Path, spec: PipelineSpec, *, export_dir: str | None = None, progress: bool = True) -> Path:
    """The cached float32 ONNX export of ``folder`` (built on first use)."""
    from qembed.model.backends.onnx_export import MODEL_FILE, export_float32

    def build(tmp: Path, stage: Stage) -> None:
        with stage("export to ONNX and check against torch"):
            info = export_float32(folder, tmp, spec=spec)
        log.info("ONNX export of %s: %s", folder, info)

    recipe = {"dtype": "float32", "padding_side": spec.padding_side, "model_type": spec.model_type, "versions": _versions()}
    return cached_artifact("onnx-float32", folder, recipe, build, steps=1, export_dir=export_dir, progress=progress) / MODEL_FILE


def onnx_int8(folder: Path, spec: PipelineSpec, *, export_dir: str | None = None, progress: bool = True) -> Path:
    """The cached int8 (dynamic quantization) ONNX model of ``folder``."""
    from qembed.model.backends.onnx_export import MODEL_FILE, quantize_int8

    def build(tmp: Path, stage: Stage) -> None:
        with stage("float32 export"):
            source = onnx_float32(folder, spec, export_dir=export_dir, progress=False)
        with stage("int8 dynamic quantization"):
            quantize_int8(source, tmp, exclude=INT8_EXCLUDE, per_channel=INT8_PER_CHANNEL)

    recipe = {
        "dtype": "int8",
        "scheme": "dynamic, MatMul with constant B",
        "exclude": list(INT8_EXCLUDE),
        "per_channel": INT8_PER_CHANNEL,
        "padding_side": spec.padding_side,
        "model_type": spec.model_type,
        "versions": _versions(),
    }
    return cached_artifact("onnx-int8", folder, recipe, build, steps=2, export_dir=export_dir, progress=progress) / MODEL_FILE


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
    ) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.device = "cpu"
        self.dtype = "int8" if quantize == "int8" else "float32"
        path = (onnx_int8 if quantize == "int8" else onnx_float32)(folder, spec, export_dir=export_dir, progress=progress)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # the quantized graph's shape-inference notes are noise
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a damaged cache must say where it is
            raise ModelError(f"ONNX Runtime cannot load {path} ({exc}); delete {path.parent} to export again.") from exc
        self.path = path
        log.info("loaded %s on onnxruntime (%s, %d threads)", path, self.dtype, options.intra_op_num_threads)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        states = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return pool_numpy(states, mask, self.spec.pooling, skip)
