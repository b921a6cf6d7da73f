"""Which int8 recipe each backend uses, and the options a user may change.

Chosen by measurement on the outlier fixture (``qembed dev make-model --outliers 1``, the
activation structure of real LLM checkpoints) and on all-MiniLM-L6-v2; the numbers are in
docs/PERFORMANCE.md. ``alpha`` is SmoothQuant's migration strength (``smoothing``; "auto":
chosen per model by ``prepare.choose_alpha``; None or 0: no smoothing); ``keep`` names Linears (module-path substrings) left in the float dtype.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from qembed.errors import InputError

# The gate's default floor: the worst calibration vector of an int8 build must keep
# cosine >= 0.99 to the float32 one (mean is reported beside it).
DEFAULT_MIN_COSINE = 0.99


@dataclass(frozen=True)
class Int8Recipe:
    """How one backend builds its int8 model."""

    alpha: float | str | None = 0.5  # "auto": searched per model (int8.prepare); None/0: off
    # The first decoder layer is where massive activations are born (Sun et al. 2024) and
    # the one int8 hurts most: kept in float it lifts the outlier fixture's worst cosine
    # from 0.990 to 0.9995 for 1/28 of Qwen3-0.6B's Linear work (docs/PERFORMANCE.md).
    keep: tuple[str, ...] = ("layers.0.",)
    # "per-token": one activation scale per token (torch, onnx: our MatMulInteger graph);
    # "per-tensor": ONNX Runtime's dynamic quantization, one scale for the whole batch;
    # "per-token-group": one scale per token per block of the hidden size (onnx: MatMulNBits,
    # blocks of 128; openvino: its run-time quantization, groups of 32);
    # "auto" (onnx): per-tensor (the faster fused kernel) when it passes the gate, else per-token-group.
    activations: str = "per-token"
    # Smooth encoders (BERT family) too. Measured on MiniLM: per-token torch/onnx need it to pass
    # the gate (min cosine 0.9884 without); OpenVINO gains nothing from it (0.99763 without,
    # 0.99759 with) and its vectors then move by 1e-4 with the batch shape, so it skips it.
    smooth_encoders: bool = True

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["keep"] = list(self.keep)
        return data


# torch: per-token int8 activations (torch_w8a8) after SmoothQuant; onnx: ONNX Runtime's
# per-tensor dynamic quantization when it passes the gate, else per-token groups; openvino:
# per-token groups of 32 at run time, smoothed lightly (alpha 0.2: its weights are int8 per
# channel, so moving more of the outliers into them costs more than the activations gain;
# full-shape outlier fixture, min cosine by alpha 0 / 0.2 / 0.3 / 0.5 / 0.7: 0.9823 / 0.9938 /
# 0.9917 / 0.9892 / 0.9853, docs/PERFORMANCE.md).
DEFAULT_RECIPES: dict[str, Int8Recipe] = {
    "torch": Int8Recipe(),
    "onnx": Int8Recipe(activations="auto"),
    "openvino": Int8Recipe(alpha=0.2, activations="per-token-group", smooth_encoders=False),
}


ONNX_ACTIVATIONS = ("auto", "per-token-group", "per-token", "per-tensor")


@dataclass(frozen=True)
class Int8Options:
    """What the settings say about int8 (``--int8-min-cosine``, ``--int8-smoothquant``,
    ``--int8-keep``, ``--int8-activations``); None fields take the backend's measured default."""

    min_cosine: float = DEFAULT_MIN_COSINE
    alpha: float | None = None
    keep: tuple[str, ...] | None = None
    activations: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> Int8Options:
        """The int8 gate threshold and recipe overrides of a ``Settings`` (int8_* fields)."""
        keep = tuple(settings.int8_keep) if settings.int8_keep is not None else None
        activations = None if settings.int8_activations == "auto" else settings.int8_activations
        return cls(
            min_cosine=settings.int8_min_cosine,
            alpha=settings.int8_smoothquant,
            keep=keep,
            activations=activations,
        )

    def recipe(self, backend: str, *, decoder: bool = True) -> Int8Recipe:
        """The recipe for ``backend`` (``decoder``: a decoder LLM such as Qwen3, else an encoder)."""
        base = DEFAULT_RECIPES[backend]
        default_alpha = base.alpha if decoder or base.smooth_encoders else None
        alpha = default_alpha if self.alpha is None else (self.alpha or None)
        keep = base.keep if self.keep is None else tuple(self.keep)
        activations = self.activations or base.activations
        if backend == "onnx" and activations not in ONNX_ACTIVATIONS:
            raise InputError(
                "--int8-activations for the onnx backend: auto, per-token-group, per-token or per-tensor, "
                f"not {activations!r}.",
                param="int8_activations",
            )
        if backend != "onnx":  # --int8-activations chooses for onnx; the others have one scheme each
            activations = base.activations
        return Int8Recipe(
            alpha=alpha, keep=keep, activations=activations, smooth_encoders=base.smooth_encoders
        )
