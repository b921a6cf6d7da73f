"""Export a model folder to ONNX (float32), done by qembed itself, and quantize it to int8.

The graph is the transformer only: ``(input_ids, attention_mask) -> last_hidden_state``
with dynamic batch and sequence axes. Pooling stays outside (``pooling_np``) so one
export serves every pooling mode and ``include_prompt`` setting.

Export uses torch's dynamo exporter at opset 23, where attention, RMSNorm and rotary
embeddings are single ONNX operators (``Attention``, ``RMSNormalization``,
``RotaryEmbedding``) that ONNX Runtime runs as fused kernels instead of ~15 small ops
each (an 8-layer-deep chain of Pow/ReduceMean/Sqrt/Reciprocal/Mul per norm, the
Where/IsNaN guards around softmax). When that fails (older exporter or runtime), the
exporter's default opset, then the TorchScript exporter, are tried. Each node is renamed
after the module it came from (``layers.3.mlp.down_proj/MatMul``) so that quantization
recipes can name the layers they keep in float32, and the result is checked against the
plain torch model on a padded batch of another shape before it is cached: an export that
computes something else must never be served.

int8 is ONNX Runtime's dynamic quantization: weights int8 (signed, per tensor),
activations quantized per batch at run time, only MatMuls whose B is a constant
(the attention products stay float32; quantizing both sides costs accuracy and the
per-call min/max scans take longer than the tiny seq x seq products they would speed up).
ONNX Runtime then fuses DynamicQuantizeLinear + MatMulInteger + scale into one
``DynamicQuantizeMatMul`` per Linear, which runs on AVX-512 VNNI where the CPU has it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qembed.errors import ModelError
from qembed.model.pipeline import LAST_TOKEN_MODEL_TYPES, PipelineSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
# cos(torch, onnx) of every real token's state on the check batch; float32 exports agree
# to ~1e-6 absolute, so anything below this is a broken export, not rounding.
EXPORT_MIN_COSINE = 0.9999


def _load_float32(folder: Path) -> PreTrainedModel:
    import torch
    from transformers import AutoModel

    from qembed.model.backends.torch_backend import quiet_transformers

    kwargs = {"attn_implementation": "sdpa"}
    with quiet_transformers():
        try:
            model = AutoModel.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            model = AutoModel.from_pretrained(str(folder), torch_dtype=torch.float32, **kwargs)
    return model.eval()


def check_batch(
    vocab_size: int, padding_side: str, *, rows: int = 3, width: int = 11, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A padded batch of random ids (rows of different lengths) for export and checks."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, max(11, min(vocab_size, 30000)), size=(rows, width)).astype(np.int64)
    mask = np.ones_like(ids)
    for row in range(1, rows):
        pad = min(width - 2, 2 * row)
        if padding_side == "left":
            mask[row, :pad] = 0
        else:
            mask[row, width - pad :] = 0
    ids[mask == 0] = 0
    return ids, mask


def _wrapper(model, *, decoder: bool, full_mask: bool = False):
    import torch

    class Encoder(torch.nn.Module):
        """Only the tensors every backend needs, under stable input/output names.

        ``decoder``: pass ``position_ids = arange(seq)`` per row, which is what decoder
        models compute by default anyway (one row broadcast); spelled out with the batch
        dimension because ONNX Runtime's RotaryEmbedding wants caches shaped like its
        input. Never for encoders such as XLM-R, whose default positions depend on padding.

        ``full_mask``: hand the model a 4-D boolean mask (causal for decoders) in which
        every padding row may attend to itself. Real rows see exactly what they saw
        before, but no row is left with nothing to attend to: OpenVINO's fused attention
        returns NaN for such rows, and a NaN value row poisons the real rows through
        ``0 * NaN`` in the probabilities x values product.
        """

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.m = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            kwargs: dict[str, Any] = {"use_cache": False} if decoder else {}
            batch, n = input_ids.shape
            if decoder:
                kwargs["position_ids"] = (
                    torch.arange(n, device=input_ids.device).unsqueeze(0).expand(batch, -1)
                )
            mask = attention_mask
            if full_mask:
                keep = attention_mask.bool()[:, None, None, :].expand(-1, 1, n, -1)
                eye = torch.eye(n, dtype=torch.bool, device=input_ids.device)
                if decoder:
                    keep = keep & torch.ones(n, n, dtype=torch.bool, device=input_ids.device).tril()
                mask = keep | eye
            return self.m(input_ids=input_ids, attention_mask=mask, **kwargs).last_hidden_state

    return Encoder(model).eval()


def _name_nodes_after_modules(path: Path) -> None:
    """Rename nodes ``<module path>/<op>`` (e.g. ``layers.3.mlp.down_proj/MatMul``) from the
    exporter's name scopes, for node exclusion lists and readable profiles."""
    import ast

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    seen: dict[str, int] = {}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if not scopes:
            continue
        try:
            parts = [s for s in ast.literal_eval(scopes) if s]
        except (ValueError, SyntaxError):
            continue
        module = next((p for p in reversed(parts[:-1]) if "." in p or p == "m"), None)
        if module is None:
            continue
        module = module.removeprefix("m.")
        base = f"{module}/{node.op_type}"
        count = seen.get(base, 0)
        seen[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"
    onnx.save(model, str(path))  # the graph only: weights stay in the external data file


# (exporter, opset) tried in order; see the module docstring.
ATTEMPTS: tuple[tuple[str, int | None], ...] = (("dynamo", 23), ("dynamo", None), ("torchscript", 17))


def _export_once(wrapper, args, out: Path, exporter: str, opset: int | None) -> None:
    import torch

    input_names, output_names = ["input_ids", "attention_mask"], ["last_hidden_state"]
    if exporter == "dynamo":
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
        torch.onnx.export(
            wrapper,
            args,
            str(out),
            dynamo=True,
            external_data=True,
            verbose=False,
            optimize=True,
            opset_version=opset,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            input_names=input_names,
            output_names=output_names,
        )
    else:
        axes = {0: "batch", 1: "seq"}
        torch.onnx.export(
            wrapper,
            args,
            str(out),
            dynamo=False,
            opset_version=opset,
            dynamic_axes={name: axes for name in ("input_ids", "attention_mask", "last_hidden_state")},
            input_names=input_names,
            output_names=output_names,
        )


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Hold the exporters' warnings (e.g. "torchvision is not installed") for one export."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_float32(folder: Path, out_dir: Path, *, spec: PipelineSpec, model=None) -> dict[str, object]:
    """Write ``out_dir/model.onnx`` (+ external weights) for ``folder``; returns how it was made.

    ``model``: an already loaded float32 model to export instead (e.g. one whose weights
    SmoothQuant has rescaled); it is also what the export is checked against."""
    import io

    import torch

    model = _load_float32(folder) if model is None else model
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    wrapper = _wrapper(model, decoder=spec.model_type in LAST_TOKEN_MODEL_TYPES)
    vocab = int(model.config.vocab_size)
    ids, mask = check_batch(vocab, spec.padding_side, rows=2, width=16)
    args = (torch.from_numpy(ids), torch.from_numpy(mask))
    out = Path(out_dir) / MODEL_FILE
    errors = []
    for exporter, opset in ATTEMPTS:
        for leftover in Path(out_dir).iterdir():
            leftover.unlink()
        try:
            # The exporters print their progress to stdout; qembed's own bar says what happens.
            with contextlib.redirect_stdout(io.StringIO()), _quiet("torch.onnx", "onnxscript"):
                _export_once(wrapper, args, out, exporter, opset)
            _name_nodes_after_modules(out)
            cosine = check_export(model, out, vocab, spec.padding_side)
        except Exception as exc:  # noqa: BLE001 - try the next recipe, report all when none works
            errors.append(f"{exporter} opset {opset or 'default'}: {type(exc).__name__}: {str(exc)[:300]}")
            log.warning(
                "ONNX export of %s with %s (opset %s) failed: %s", folder, exporter, opset or "default", exc
            )
            continue
        return {"exporter": exporter, "opset": opset, "check_min_cosine": cosine}
    raise ModelError(f"Could not export {folder} to ONNX: " + " | ".join(errors))


def check_export(model, onnx_path: Path, vocab_size: int, padding_side: str) -> float:
    """Compare the export with the plain torch model on a padded batch of another shape;
    raise when they differ. Returns the smallest per-token cosine."""
    import onnxruntime as ort
    import torch

    ids, mask = check_batch(vocab_size, padding_side, rows=3, width=11, seed=1)
    with torch.inference_mode():
        want = model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state.numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    if not np.isfinite(got).all():  # padded rows too: int8 scales are taken over the whole batch
        raise ModelError("The ONNX export produced non-finite values on a padded batch.")
    real = mask.astype(bool)
    a, b = want[real], got[real]
    cos = float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())
    if not cos >= EXPORT_MIN_COSINE:
        raise ModelError(f"The ONNX export disagrees with torch (min cosine {cos:.6f}).")
    return cos


def quantize_int8(
    src: Path, out_dir: Path, *, exclude: Sequence[str] = (), per_channel: bool = False
) -> Path:
    """Dynamic int8 quantization of ``src``'s constant-weight MatMuls into ``out_dir/model.onnx``.

    ``exclude``: module-path substrings (e.g. ``"mlp.down_proj"``) whose MatMuls stay float32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    excluded = [n.name for n in graph.node if n.op_type == "MatMul" and any(s in n.name for s in exclude)]
    out = Path(out_dir) / MODEL_FILE
    root = logging.getLogger()  # the quantizer logs one INFO line per tensor on the root logger
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        quantize_dynamic(
            str(src),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=False,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded,
            use_external_data_format=True,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
    return out
