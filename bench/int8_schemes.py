"""Which int8 scheme holds on a model: the gate's cosine for SmoothQuant alphas, kept layers and
activation scales, emulated in torch float32 on the gate texts (docs/PERFORMANCE.md, issue 17).

Each candidate is ``[alpha, [kept module substrings], scheme]``, scheme ``token`` (one scale
per token: ``torch_w8a8.Int8Linear``, the arithmetic of the onnx per-token graph) or a block
size such as ``128`` (one scale per token and block of channels, weights in the same blocks:
the arithmetic of ONNX Runtime's 8-bit ``MatMulNBits`` with ``accuracy_level`` 4, computed
with fake quantization). The activation statistics come from a torch int8 build of the model
(``qembed info --model M --backend torch --quantize int8 --int8-min-cosine -1`` makes it),
the float32 reference from the gate's cache. About 45 s (token) to 110 s (blocks) per
candidate for the full-shape Qwen3-0.6B on 2 cores.

    .venv/bin/python bench/int8_schemes.py models/qwen3-0.6b-outliers \\
        '[[0.5, ["layers.0."], "token"], [0.5, ["layers.0."], "128"], [0.5, ["layers.0."], "32"]]'
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from qembed.model.backends.int8 import gate
from qembed.model.backends.int8.calibration import calibration_texts, token_batches, torch_batches
from qembed.model.backends.int8.prepare import _pooled, forward_kwargs
from qembed.model.backends.int8.smoothing import ActivationStats, collect_stats, smooth_model
from qembed.model.backends.int8.torch_w8a8 import quantize_linears
from qembed.model.backends.onnx_export import _load_float32
from qembed.model.backends.torch_int8 import STATS_FILE
from qembed.model.pipeline import load_pipeline


class BlockQuantLinear(torch.nn.Module):
    """Fake-quantized Linear: int8 weights and activations, one scale per block of ``block``
    input channels (per output row for weights, per token for activations)."""

    def __init__(self, linear: torch.nn.Linear, block: int) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        rows, cols = w.shape
        self.block = block
        wb = w.reshape(rows, cols // block, block)
        scale = wb.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
        self.weight = (torch.round(wb / scale).clamp(-127, 127) * scale).reshape(rows, cols)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xb = x.reshape(-1, shape[-1] // self.block, self.block).float()
        scale = xb.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
        xq = (torch.round(xb / scale).clamp(-127, 127) * scale).reshape(shape)
        y = xq @ self.weight.t()
        return y if self.bias is None else y + self.bias


class TensorQuantLinear(torch.nn.Module):
    """Fake-quantized Linear with ONNX Runtime's dynamic arithmetic: activations uint8 with ONE
    scale and zero point for the whole batch, int8 weights per output channel; the input
    channels in ``outliers`` are taken out and multiplied in float (LLM.int8()-style
    decomposition, Dettmers et al. 2022)."""

    def __init__(self, linear: torch.nn.Linear, outliers: torch.Tensor) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        self.outliers = outliers
        self.w_out = w[:, outliers].clone()
        rest = w.clone()
        rest[:, outliers] = 0
        scale = rest.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
        self.weight = torch.round(rest / scale).clamp(-127, 127) * scale
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x_out = x[..., self.outliers]
        rest = x.clone()
        rest[..., self.outliers] = 0
        lo, hi = min(float(rest.min()), 0.0), max(float(rest.max()), 0.0)
        scale = max(hi - lo, 1e-12) / 255
        zero = round(-lo / scale)
        xq = (torch.round(rest / scale) + zero).clamp(0, 255)
        y = ((xq - zero) * scale) @ self.weight.t() + x_out @ self.w_out.t()
        return y if self.bias is None else y + self.bias


def outlier_channels(absmax: torch.Tensor, ratio: float, cap: int) -> torch.Tensor:
    """The input channels whose calibration max |x| is above ``ratio`` x the median (at most ``cap``)."""
    order = torch.argsort(absmax, descending=True)[:cap]
    return order[absmax[order] > ratio * absmax.median()].sort().values


def decoder_linears(model: torch.nn.Module, exclude: list[str]):
    """(parent, attribute, full name, Linear) of every decoder-layer Linear not in ``exclude``."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if (
                isinstance(child, torch.nn.Linear)
                and "layers." in full
                and not any(e in full for e in exclude)
            ):
                yield module, child_name, full, child


def quantize_tensor(
    model: torch.nn.Module, stats: ActivationStats, ratio: float, cap: int, exclude: list[str]
) -> int:
    taken = 0
    for parent, attr, full, linear in decoder_linears(model, exclude):
        chans = (
            outlier_channels(stats.absmax[full], ratio, cap) if ratio else torch.zeros(0, dtype=torch.long)
        )
        taken += len(chans)
        setattr(parent, attr, TensorQuantLinear(linear, chans))
    return taken


def quantize_blocks(model: torch.nn.Module, block: int, exclude: list[str]) -> None:
    for parent, attr, _full, linear in decoder_linears(model, exclude):
        setattr(parent, attr, BlockQuantLinear(linear, block))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("candidates", help='JSON list of [alpha, [kept substrings], "token" | block size]')
    parser.add_argument("--stats", type=Path, help="a torch-int8 export folder (default: the model's newest)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = load_pipeline(args.model)
    stats_dir = args.stats or max(
        (args.model / ".qembed" / "exports").glob("torch-int8-*/"), key=lambda p: p.stat().st_mtime
    )
    stats = ActivationStats(absmax=load_file(str(stats_dir / STATS_FILE)))
    want = gate._normalize(gate.reference_vectors(args.model, spec, progress=False))
    batches = gate.gate_batches(args.model, spec)
    base = _load_float32(args.model)
    calib = token_batches(args.model, spec, calibration_texts("calib"))
    for alpha, keep, scheme in json.loads(args.candidates):
        start = time.time()
        model = copy.deepcopy(base)
        if alpha:
            smooth_model(model, stats, alpha=alpha)
        if scheme == "token":
            quantize_linears(model, exclude=keep)
        elif scheme.startswith("tensor"):  # "tensor" or "tensor+RATIO/CAP": per batch, outliers in float
            ratio, cap = (float(v) for v in scheme.partition("+")[2].split("/")) if "+" in scheme else (0, 0)
            smoothed = collect_stats(model, torch_batches(calib), **forward_kwargs(spec))
            taken = quantize_tensor(model, smoothed, ratio, int(cap), keep)
            print(f"{scheme}: {taken} outlier channels in float", flush=True)
        else:
            quantize_blocks(model, int(scheme), keep)
        cos = (want * gate._normalize(_pooled(model, batches, spec))).sum(1)
        print(
            json.dumps(
                {
                    "alpha": alpha,
                    "keep": keep,
                    "scheme": scheme,
                    "min_cosine": round(float(cos.min()), 5),
                    "mean_cosine": round(float(cos.mean()), 5),
                    "p01_cosine": round(float(np.quantile(cos, 0.01)), 5),
                    "worst_texts": np.argsort(cos)[:3].tolist(),
                    "seconds": round(time.time() - start),
                }
            ),
            flush=True,
        )
        del model


if __name__ == "__main__":
    main()
