"""SmoothQuant: move activation outliers into the weights before int8 quantization.

Real LLM checkpoints have a few hidden channels whose activations are 10-1000x the rest
(Dettmers et al. 2022; Sun et al. 2024). One int8 scale per tensor (or per token) then
spends its 255 levels on those channels and rounds every other channel to a handful of
values. SmoothQuant (Xiao et al. 2023, arXiv:2211.10438) divides each input channel ``j``
of a Linear by ``s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)`` and multiplies the
weight column by the same ``s_j``: the product is unchanged in exact arithmetic, and the
activation range becomes flat enough for int8, while the weights (quantized per output
channel) absorb a bounded share of the range.

The division is folded into the module that PRODUCES the activation, so it costs nothing
at run time and the float model stays exactly the same function:

=====================================  =====================================================
consumer Linear(s)                     producer the 1/s is folded into
=====================================  =====================================================
q_proj, k_proj, v_proj                 ``input_layernorm`` gain (pre-norm decoders: its
                                       output feeds only these three; the residual is
                                       taken before the norm)
gate_proj, up_proj                     ``post_attention_layernorm`` gain
down_proj                              ``up_proj`` rows (down_proj sees act(gate) * up,
                                       linear in up's output)
o_proj                                 ``v_proj`` rows (attention output is a convex
                                       combination of values; with grouped-query attention
                                       one value channel serves several heads, so those
                                       heads share one scale)
BERT ``attention.output.dense``        ``attention.self.value`` rows
=====================================  =====================================================

BERT's other Linears read a LayerNorm output that is also the residual stream, or a GELU
output, so nothing can absorb the division there; they are left as they are (per-channel
weights and per-token activations handle BERT-family models, see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import torch

log = logging.getLogger(__name__)

EPS = 1e-5


@dataclass
class ActivationStats:
    """Per-input-channel max |x| of every Linear, over the real (unpadded) tokens."""

    absmax: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: int = 0


@torch.inference_mode()
def collect_stats(
    model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], **forward_kwargs
) -> ActivationStats:
    """Run ``model`` on ``(input_ids, attention_mask)`` batches and record Linear input maxima.

    Padding positions are left out: their activations are whatever the model computes for
    a token nobody reads, and counting them would widen the scales for nothing."""
    stats = ActivationStats()
    current: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            keep = current["mask"]
            rows = x[keep] if x.dim() == 3 and x.shape[:2] == keep.shape else x.reshape(-1, x.shape[-1])
            m = rows.detach().abs().amax(0).float()
            prev = stats.absmax.get(name)
            stats.absmax[name] = m if prev is None else torch.maximum(prev, m)

        return record

    handles = [
        module.register_forward_pre_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    ]
    try:
        for ids, mask in batches:
            current["mask"] = mask.bool()
            model(input_ids=ids, attention_mask=mask, **forward_kwargs)
            stats.tokens += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return stats


def _scales(act: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    w = torch.stack([wt.detach().abs().amax(0).float() for wt in weights]).amax(0)
    s = act.clamp_min(EPS).pow(alpha) / w.clamp_min(EPS).pow(1 - alpha)
    return s.clamp_min(EPS)


def _get(model: torch.nn.Module, name: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _linear(model: torch.nn.Module, name: str) -> torch.nn.Linear | None:
    """A projection by name: the layouts smoothed here (Llama-style decoders, BERT) hold
    ``nn.Linear`` modules at those names."""
    return cast("torch.nn.Linear | None", _get(model, name))


@torch.no_grad()
def _fold_norm(norm: torch.nn.Module, linears: list[torch.nn.Linear], s: torch.Tensor) -> None:
    weight = cast(torch.Tensor, norm.weight)
    weight.div_(s.to(weight.dtype))
    bias = getattr(norm, "bias", None)
    if bias is not None:
        bias.div_(s.to(bias.dtype))
    for lin in linears:
        lin.weight.mul_(s.to(lin.weight.dtype)[None, :])


@torch.no_grad()
def _fold_rows(
    producer: torch.nn.Linear, consumer: torch.nn.Linear, s_rows: torch.Tensor, s_cols: torch.Tensor
) -> None:
    producer.weight.div_(s_rows.to(producer.weight.dtype)[:, None])
    if producer.bias is not None:
        producer.bias.div_(s_rows.to(producer.bias.dtype))
    consumer.weight.mul_(s_cols.to(consumer.weight.dtype)[None, :])


def smooth_model(model: torch.nn.Module, stats: ActivationStats, *, alpha: float) -> list[str]:
    """Fold SmoothQuant scales into ``model`` in place; returns the Linears smoothed.

    Works on the module names of transformers' Llama-style decoders (Qwen2/Qwen3, Llama,
    Mistral: ``layers.N.self_attn.*``, ``layers.N.mlp.*``) and BERT encoders
    (``encoder.layer.N.attention.*``); anything else is left unchanged (and said so)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], not {alpha}")
    smoothed: list[str] = []
    absmax = stats.absmax
    config = getattr(model, "config", None)
    prefix = next((p for p in ("layers", "model.layers") if _get(model, p) is not None), None)
    if prefix is not None:
        layers = _get(model, prefix)
        heads = int(getattr(config, "num_attention_heads", 0) or 0)
        kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
        for i in range(len(layers)):  # type: ignore[arg-type]
            p = f"{prefix}.{i}"
            for norm_name, names in (
                ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
            ):
                norm = _get(model, f"{p}.{norm_name}")
                lins = [lin for n in names if (lin := _linear(model, f"{p}.{n}")) is not None]
                if norm is None or len(lins) < len(names) or f"{p}.{names[0]}" not in absmax:
                    continue
                s = _scales(absmax[f"{p}.{names[0]}"], [lin.weight for lin in lins], alpha)
                _fold_norm(norm, lins, s)
                smoothed += [f"{p}.{n}" for n in names]
            up, down = _linear(model, f"{p}.mlp.up_proj"), _linear(model, f"{p}.mlp.down_proj")
            if up is not None and down is not None and f"{p}.mlp.down_proj" in absmax:
                s = _scales(absmax[f"{p}.mlp.down_proj"], [down.weight], alpha)
                _fold_rows(up, down, s, s)
                smoothed.append(f"{p}.mlp.down_proj")
            v, o = _linear(model, f"{p}.self_attn.v_proj"), _linear(model, f"{p}.self_attn.o_proj")
            if v is not None and o is not None and f"{p}.self_attn.o_proj" in absmax and heads and kv_heads:
                _fold_value_into_output(v, o, absmax[f"{p}.self_attn.o_proj"], heads, kv_heads, alpha)
                smoothed.append(f"{p}.self_attn.o_proj")
        return smoothed
    encoder = _get(model, "encoder.layer")
    if encoder is not None:
        for i in range(len(encoder)):  # type: ignore[arg-type]
            p = f"encoder.layer.{i}.attention"
            v, o = _linear(model, f"{p}.self.value"), _linear(model, f"{p}.output.dense")
            if v is not None and o is not None and f"{p}.output.dense" in absmax:
                s = _scales(absmax[f"{p}.output.dense"], [o.weight], alpha)
                _fold_rows(v, o, s, s)
                smoothed.append(f"{p}.output.dense")
        return smoothed
    log.warning(
        "SmoothQuant: no known layer layout in %s; the model is quantized without smoothing.",
        type(model).__name__,
    )
    return smoothed


def _fold_value_into_output(
    v: torch.nn.Linear, o: torch.nn.Linear, act: torch.Tensor, heads: int, kv_heads: int, alpha: float
) -> None:
    """o_proj input channel (h, d) is value channel (h // group, d): one scale per value
    channel, taken over every head that reads it."""
    head_dim = o.weight.shape[1] // heads
    group = heads // kv_heads
    act_kv = act.float().reshape(kv_heads, group, head_dim).amax(1)  # [kv, d]
    w_kv = o.weight.detach().abs().float().amax(0).reshape(kv_heads, group, head_dim).amax(1)
    s_kv = (act_kv.clamp_min(EPS).pow(alpha) / w_kv.clamp_min(EPS).pow(1 - alpha)).clamp_min(EPS)
    s_cols = s_kv[:, None, :].expand(kv_heads, group, head_dim).reshape(-1)
    _fold_rows(v, o, s_kv.reshape(-1), s_cols)
