"""int8 that stays right on real LLM weights.

- ``calibration``: the shipped calibration set (``calib`` split for statistics, ``gate``
  split for the quality gate) and how it is tokenized;
- ``smoothing``: SmoothQuant, folded into the weights (no run-time cost);
- ``torch_w8a8``: int8 Linear layers with per-token activations (``torch._int_mm``);
- ``recipes``: what each backend does, chosen by measurement; the user's overrides;
- ``prepare``: the (smoothed) float32 model every recipe starts from;
- ``gate``: the measurement on the calibration set, cached with each build, and the
  refusal below ``--int8-min-cosine``.
"""

from qembed.model.backends.int8.recipes import DEFAULT_MIN_COSINE, DEFAULT_RECIPES, Int8Options, Int8Recipe

__all__ = ["DEFAULT_MIN_COSINE", "DEFAULT_RECIPES", "Int8Options", "Int8Recipe"]
