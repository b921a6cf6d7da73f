"""int8 Linear layers for torch: int8 weights per output channel, int8 activations per token.

``torch._int_mm`` multiplies int8 matrices with int32 accumulation (oneDNN VNNI kernels on
x86). Activations are quantized per token (one scale per row, symmetric) when the layer
runs, so a token's precision never depends on another token in the batch (per-tensor
schemes such as torch.ao's and ONNX Runtime's dynamic quantization share one scale across
the whole batch: a single outlier token coarsens everyone). Weights are quantized once,
symmetric per output channel. Everything else in the model (attention, norms, rotary,
activations) stays in the float dtype it was loaded in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

QMAX = 127.0


class Int8Linear(torch.nn.Module):
    """``y = x W^T + b`` with int8 ``x`` (per token) and int8 ``W`` (per output channel)."""

    # buffers (register_buffer): declared so the type checker sees tensors, not Tensor | Module
    weight_t: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(1).clamp_min(1e-12) / QMAX
        q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
        self.register_buffer("weight_t", q.t().contiguous())  # [in, out]: the layout _int_mm reads fastest
        self.register_buffer("weight_scale", scale)
        self.bias = (
            None
            if linear.bias is None
            else torch.nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        )
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        dtype = x.dtype
        rows = x.reshape(-1, shape[-1]).float()
        scale = rows.abs().amax(1, keepdim=True).clamp_min_(1e-12).div_(QMAX)
        q = torch.round(rows / scale).clamp_(-QMAX, QMAX).to(torch.int8)
        y = torch._int_mm(q, self.weight_t).float()
        y.mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.to(dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, int8 per-token x per-channel"
        )


def quantize_linears(model: torch.nn.Module, *, exclude: Sequence[str] = ()) -> list[str]:
    """Swap every ``nn.Linear`` whose name contains none of ``exclude`` for ``Int8Linear``."""
    swapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and not any(s in full for s in exclude):
                setattr(module, child_name, Int8Linear(child))
                swapped.append(full)
    return swapped
