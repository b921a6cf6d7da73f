"""The float32 torch model every int8 recipe starts from, smoothed when the recipe says so.

SmoothQuant's ``alpha`` decides how much of an activation outlier moves into the weights;
the best value depends on the checkpoint (0.5 in the paper, 0.8 for some LLMs). With
``alpha="auto"`` (the default) it is chosen per model by measurement: each value of
``ALPHA_GRID`` is tried with per-token int8 Linears (``torch_w8a8``) on the ``calib``
split, and the one with the best worst-case cosine to float32 wins. The gate later judges
the result on the other split, so the choice is not graded on its own training texts.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from qembed.model.backends.int8.calibration import calibration_texts, token_batches, torch_batches
from qembed.model.backends.int8.recipes import Int8Recipe
from qembed.model.backends.int8.smoothing import ActivationStats, collect_stats, smooth_model
from qembed.model.pipeline import LAST_TOKEN_MODEL_TYPES, PipelineSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def forward_kwargs(spec: PipelineSpec) -> dict[str, object]:
    """Decoders run without a KV cache (nothing is generated)."""
    return {"use_cache": False} if spec.model_type in LAST_TOKEN_MODEL_TYPES else {}


def calibration_stats(model: torch.nn.Module, folder: Path, spec: PipelineSpec) -> ActivationStats:
    """Linear input maxima of ``model`` on the ``calib`` split."""
    batches = token_batches(folder, spec, calibration_texts("calib"))
    return collect_stats(model, torch_batches(batches), **forward_kwargs(spec))


@torch.inference_mode()
def _pooled(
    model: torch.nn.Module, batches: list[tuple[np.ndarray, np.ndarray]], spec: PipelineSpec
) -> np.ndarray:
    from qembed.model.pooling import pool

    out = []
    for ids, mask in torch_batches(batches):
        states = model(input_ids=ids, attention_mask=mask, **forward_kwargs(spec)).last_hidden_state
        v = pool(states, mask, spec.pooling, None).float()
        out.append(torch.nn.functional.normalize(v, dim=-1).numpy())
    return np.concatenate(out)


def choose_alpha(
    model: torch.nn.Module,
    folder: Path,
    spec: PipelineSpec,
    stats: ActivationStats,
    grid: tuple[float, ...] = ALPHA_GRID,
) -> tuple[float, dict[str, dict[str, float]]]:
    """The ``alpha`` of ``grid`` whose per-token int8 model is closest to float32 on the
    ``calib`` split (best minimum cosine, then best mean); returns it and every trial."""
    from qembed.model.backends.int8.torch_w8a8 import quantize_linears

    batches = token_batches(folder, spec, calibration_texts("calib"))
    want = _pooled(model, batches, spec)
    trials: dict[str, dict[str, float]] = {}
    for alpha in grid:
        trial = copy.deepcopy(model)
        smooth_model(trial, stats, alpha=alpha)
        quantize_linears(trial)
        cos = (want * _pooled(trial, batches, spec)).sum(1)
        trials[f"{alpha:g}"] = {
            "min_cosine": round(float(cos.min()), 6),
            "mean_cosine": round(float(cos.mean()), 6),
        }
        del trial
    best = max(grid, key=lambda a: (trials[f"{a:g}"]["min_cosine"], trials[f"{a:g}"]["mean_cosine"]))
    log.info("SmoothQuant alpha search on %d calibration texts: %s -> %g", len(want), trials, best)
    return best, trials


def resolve_alpha(
    model: torch.nn.Module, folder: Path, spec: PipelineSpec, stats: ActivationStats, recipe: Int8Recipe
) -> tuple[float | None, dict[str, Any]]:
    """The alpha to apply (None: no smoothing) and what to record about the choice."""
    if recipe.alpha == "auto":
        alpha, trials = choose_alpha(model, folder, spec, stats)
        return alpha, {"alpha": alpha, "chosen_by": "search on the calib split", "trials": trials}
    if not recipe.alpha:
        return None, {"alpha": None}
    return float(recipe.alpha), {"alpha": float(recipe.alpha), "chosen_by": "setting"}


def apply_smoothing(model: torch.nn.Module, stats: ActivationStats, alpha: float | None) -> list[str]:
    if not alpha:
        return []
    smoothed = smooth_model(model, stats, alpha=alpha)
    log.info("SmoothQuant (alpha %.2f): %d Linear inputs smoothed", alpha, len(smoothed))
    return smoothed


def smoothed_float32(
    folder: Path, spec: PipelineSpec, recipe: Int8Recipe
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """``folder``'s float32 model with the recipe's smoothing folded in, and the smoothing
    record (chosen alpha, search trials) for the build's manifest."""
    from qembed.model.backends.onnx_export import _load_float32

    model = _load_float32(folder)
    if not recipe.alpha:
        return model, {"alpha": None}
    stats = calibration_stats(model, folder, spec)
    alpha, record = resolve_alpha(model, folder, spec, stats, recipe)
    apply_smoothing(model, stats, alpha)
    return model, record
