"""The OpenVINO backend (CPU): float32, or int8 weights with per-token dynamic quantization.

Conversion goes straight from the torch model (``openvino.convert_model``, no ONNX
step): OpenVINO's front end recognises attention, RMSNorm and rotary embeddings there
and runs each as one fused CPU kernel. int8 uses NNCF's weight compression
(``INT8_ASYM``, per output channel; the token embedding table too, which also cuts
resident memory). At run time the CPU plugin quantizes each token's activations in
groups of 32 (``DYNAMIC_QUANTIZATION_GROUP_SIZE``) for the int8 VNNI matmuls. Scales are
per token, not per batch, so an int8 vector does not depend on its batch-mates, unlike
the per-tensor dynamic quantization of ONNX Runtime and torch.

Precision: OpenVINO computes in bfloat16 by default on CPUs with bf16 instructions
(e.g. AVX512-BF16). qembed asks for float32 (``INFERENCE_PRECISION_HINT``) unless
``--dtype bfloat16`` is given, so that ``float32`` means float32 and int8 errors are not
compounded by bf16 ones.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np

from qembed.errors import InputError, ModelError
from qembed.model.backends.artifacts import Stage, cached_artifact, library_versions, read_manifest
from qembed.model.backends.int8.recipes import DEFAULT_RECIPES, Int8Options, Int8Recipe
from qembed.model.backends.pooling_np import pool_numpy
from qembed.model.backends.threads import intra_op_threads
from qembed.model.pipeline import LAST_TOKEN_MODEL_TYPES, PipelineSpec

log = logging.getLogger(__name__)

MODEL_XML = "model.xml"
DYNAMIC_QUANTIZATION_GROUP_SIZE = 32
_PRECISION = {"auto": "f32", "float32": "f32", "bfloat16": "bf16"}


def to_openvino(model, spec: PipelineSpec):
    """The float32 torch ``model`` as an OpenVINO model with dynamic batch and length."""
    import openvino as ov
    import torch

    from qembed.model.backends.onnx_export import _wrapper, check_batch

    wrapper = _wrapper(model, decoder=spec.model_type in LAST_TOKEN_MODEL_TYPES, full_mask=True)
    ids, mask = check_batch(int(model.config.vocab_size), spec.padding_side, rows=2, width=16)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on transformers' shape checks
        dynamic = ov.PartialShape([-1, -1])
        return ov.convert_model(
            wrapper,
            example_input={"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)},
            input=[("input_ids", dynamic, ov.Type.i64), ("attention_mask", dynamic, ov.Type.i64)],
        )


def compress_int8(converted, recipe: Int8Recipe | None, *, mode: str = "INT8_ASYM"):
    """NNCF int8 weight compression (``mode``: an ``nncf.CompressWeightsMode`` name), the
    recipe's ``keep`` layers left in float."""
    import nncf

    nncf_log = logging.getLogger("nncf")  # its statistics table: qembed's bar says what happens
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    ignored = {}
    if recipe and recipe.keep:
        ignored["ignored_scope"] = nncf.IgnoredScope(
            patterns=[f".*{re.escape(k)}.*" for k in recipe.keep], validate=False
        )
    try:
        return nncf.compress_weights(converted, mode=getattr(nncf.CompressWeightsMode, mode), **ignored)
    finally:
        nncf_log.setLevel(level)


def _convert(
    folder: Path,
    spec: PipelineSpec,
    tmp: Path,
    stage: Stage,
    *,
    int8: bool,
    recipe: Int8Recipe | None = None,
    export_dir: str | None = None,
) -> dict[str, object] | None:
    import openvino as ov

    from qembed.model.backends.int8.prepare import smoothed_float32
    from qembed.model.backends.onnx_export import _load_float32

    with stage(
        "load the torch model"
        + (f" and SmoothQuant (alpha {recipe.alpha})" if int8 and recipe and recipe.alpha else "")
    ):
        model, smoothing = (
            smoothed_float32(folder, spec, recipe) if int8 and recipe else (_load_float32(folder), None)
        )
    with stage("convert to OpenVINO"):
        converted = to_openvino(model, spec)
    if int8:
        with stage("int8 weight compression (NNCF)"):
            converted = compress_int8(converted, recipe)
    with stage("save and check against torch"):
        ov.save_model(converted, str(tmp / MODEL_XML), compress_to_fp16=False)
        _check(model, tmp / MODEL_XML, spec, int8=int8)
    if not int8:
        return None
    with stage("int8 quality gate (calibration set vs float32)"):
        from qembed.model.backends.int8 import gate

        request = _compile(tmp / MODEL_XML, dtype="auto", threads=None, int8=True).create_infer_request()
        quality = gate.measure(
            lambda ids, mask: _run(request, spec, ids, mask),
            folder,
            spec,
            export_dir=export_dir,
            progress=False,
        )
    return {"quality": quality, "smoothquant": smoothing}


def _compile(xml: Path, *, dtype: str, threads: int | None, int8: bool):
    import openvino as ov

    config = {
        "INFERENCE_PRECISION_HINT": _PRECISION[dtype],
        "INFERENCE_NUM_THREADS": intra_op_threads(threads),
        "NUM_STREAMS": 1,  # one batch at a time (the worker thread), all cores on it
        "PERFORMANCE_HINT": "LATENCY",
    }
    if int8:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = DYNAMIC_QUANTIZATION_GROUP_SIZE
    return ov.Core().compile_model(str(xml), "CPU", config)


def _run(
    request,
    spec: PipelineSpec,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    ids = np.ascontiguousarray(input_ids, dtype=np.int64)
    mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
    result = request.infer({"input_ids": ids, "attention_mask": mask})
    states = next(iter(result.values()))  # the request's buffer: pooled into a new array below
    return pool_numpy(states, mask, spec.pooling, skip)


def _check(model, xml: Path, spec: PipelineSpec, *, int8: bool) -> None:
    """The converted model must match torch on a padded batch of another shape."""
    import openvino as ov
    import torch

    from qembed.model.backends.onnx_export import check_batch

    ids, mask = check_batch(int(model.config.vocab_size), spec.padding_side, rows=3, width=11, seed=1)
    with torch.inference_mode():
        want = model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state.numpy()
    compiled = ov.Core().compile_model(
        str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    )
    got = compiled({"input_ids": ids, "attention_mask": mask})[0]
    if not np.isfinite(got).all():
        raise ModelError("The OpenVINO conversion produced non-finite values on a padded batch.")
    a, b = pool_numpy(want, mask, spec.pooling), pool_numpy(got, mask, spec.pooling)
    cos = float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())
    floor = 0.98 if int8 else 0.9999  # int8 on random ids is a smoke test; the gate is on real text
    if not cos >= floor:
        raise ModelError(f"The OpenVINO conversion disagrees with torch (min cosine {cos:.5f} < {floor}).")


def openvino_model(
    folder: Path,
    spec: PipelineSpec,
    *,
    int8: bool,
    recipe: Int8Recipe | None = None,
    export_dir: str | None = None,
    progress: bool = True,
) -> Path:
    """The cached OpenVINO IR of ``folder`` (built on first use); int8 builds are smoothed
    per ``recipe`` and measured by the int8 gate (``quality`` in the manifest)."""
    recipe = (recipe or DEFAULT_RECIPES["openvino"]) if int8 else None
    key = {
        "weights": "int8_asym per channel (nncf)" if int8 else "float32",
        "mask": "4d, padding rows attend to themselves",
        "padding_side": spec.padding_side,
        "model_type": spec.model_type,
        "versions": library_versions("torch", "transformers", "openvino", "nncf"),
        **(recipe.as_dict() if recipe else {}),
    }
    kind = "openvino-int8" if int8 else "openvino-float32"

    def build(tmp: Path, stage: Stage) -> dict[str, object] | None:
        return _convert(folder, spec, tmp, stage, int8=int8, recipe=recipe, export_dir=export_dir)

    return (
        cached_artifact(
            kind, folder, key, build, steps=5 if int8 else 3, export_dir=export_dir, progress=progress
        )
        / MODEL_XML
    )


class OpenVinoBackend:
    """``embed`` through a compiled OpenVINO model on the CPU."""

    name = "openvino"

    def __init__(
        self,
        folder: Path,
        spec: PipelineSpec,
        *,
        quantize: str = "none",
        dtype: str = "auto",
        threads: int | None = None,
        export_dir: str | None = None,
        progress: bool = True,
        int8: Int8Options | None = None,
    ) -> None:
        from qembed.model.backends.int8.gate import enforce

        if dtype not in _PRECISION:
            raise InputError(
                f"The openvino backend computes in float32 or bfloat16, not {dtype!r}.", param="dtype"
            )
        self.spec = spec
        self.device = "cpu"
        is_int8 = quantize == "int8"
        self.dtype = "int8" if is_int8 else ("bfloat16" if dtype == "bfloat16" else "float32")
        self.quality: dict[str, object] | None = None
        options = int8 or Int8Options()
        xml = openvino_model(
            folder,
            spec,
            int8=is_int8,
            recipe=options.recipe("openvino", decoder=spec.model_type in LAST_TOKEN_MODEL_TYPES)
            if is_int8
            else None,
            export_dir=export_dir,
            progress=progress,
        )
        if is_int8:
            manifest = read_manifest(xml.parent)
            self.quality = manifest.get("quality")
            self.recipe = {**manifest.get("recipe", {}), "smoothquant": manifest.get("smoothquant")}
            enforce(self.quality, min_cosine=options.min_cosine, backend="openvino", model=str(folder))
        try:
            self.compiled = _compile(xml, dtype=dtype, threads=threads, int8=is_int8)
        except Exception as exc:  # noqa: BLE001 - a damaged cache must say where it is
            raise ModelError(
                f"OpenVINO cannot load {xml} ({exc}); delete {xml.parent} to convert again."
            ) from exc
        self.request = self.compiled.create_infer_request()
        self.path = xml
        log.info("loaded %s on openvino (%s, %d threads)", xml, self.dtype, intra_op_threads(threads))

    def embed(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, skip: np.ndarray | None = None
    ) -> np.ndarray:
        return _run(self.request, self.spec, input_ids, attention_mask, skip)
