"""torch with int8 Linear layers (CPU only): SmoothQuant + per-token int8 activations.

No export and no extra package. The float32 model is loaded, SmoothQuant scales (from the
calibration set's statistics, ``int8.smoothing``) are folded into its weights, and every
``nn.Linear`` not named in the recipe's ``keep`` becomes an ``Int8Linear``: int8 weights
per output channel, activations quantized per token when the layer runs, multiplied by
``torch._int_mm`` (oneDNN VNNI kernels). Attention, norms and activations stay float32.

The calibration statistics and the gate's measurement are cached as an artifact
(``torch-int8``), so a later start only loads, smooths and quantizes (seconds) and is
judged by the recorded measurement against ``--int8-min-cosine``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qembed.errors import InputError
from qembed.model.backends.artifacts import Stage, cached_artifact, library_versions, read_manifest
from qembed.model.backends.int8.recipes import Int8Options
from qembed.model.backends.torch_backend import TorchBackend
from qembed.model.pipeline import LAST_TOKEN_MODEL_TYPES, PipelineSpec

log = logging.getLogger(__name__)
STATS_FILE = "activation_absmax.safetensors"


class TorchInt8Backend(TorchBackend):
    name = "torch"

    def __init__(
        self,
        folder: Path,
        spec: PipelineSpec,
        *,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
        int8: Int8Options | None = None,
        export_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        from safetensors.torch import load_file, save_file

        from qembed.model.backends.int8 import gate
        from qembed.model.backends.int8.prepare import apply_smoothing, calibration_stats, resolve_alpha
        from qembed.model.backends.int8.smoothing import ActivationStats
        from qembed.model.backends.int8.torch_w8a8 import quantize_linears

        if device not in ("auto", "cpu"):
            raise InputError(
                f"--quantize int8 with the torch backend runs on the CPU only, not {device!r}.",
                param="quantize",
            )
        if dtype not in ("auto", "float32"):
            raise InputError(
                "--quantize int8 with the torch backend keeps float32 around the int8 layers; leave --dtype auto.",
                param="dtype",
            )
        super().__init__(folder, spec, device="cpu", dtype="float32", threads=threads)
        options = int8 or Int8Options()
        recipe = options.recipe("torch", decoder=spec.model_type in LAST_TOKEN_MODEL_TYPES)
        built = False

        def quantize(stats: ActivationStats, alpha: float | None) -> None:
            apply_smoothing(self.model, stats, alpha)
            quantize_linears(self.model, exclude=recipe.keep)

        def build(tmp: Path, stage: Stage) -> dict[str, object]:
            nonlocal built
            with stage("calibration statistics and SmoothQuant alpha"):
                stats = calibration_stats(self.model, folder, spec)
                save_file({k: v.contiguous() for k, v in stats.absmax.items()}, str(tmp / STATS_FILE))
                alpha, smoothing = (
                    resolve_alpha(self.model, folder, spec, stats, recipe)
                    if recipe.alpha
                    else (None, {"alpha": None})
                )
            with stage("SmoothQuant + int8 Linear layers"):
                quantize(stats, alpha)
                built = True
            with stage("int8 quality gate (calibration set vs float32)"):
                quality = gate.measure(self.embed, folder, spec, export_dir=export_dir, progress=False)
            return {"quality": quality, "smoothquant": smoothing}

        key = {
            "scheme": "w8a8: weights per channel, activations per token (torch._int_mm)",
            **recipe.as_dict(),
            "model_type": spec.model_type,
            "versions": library_versions("torch", "transformers"),
        }
        artifact = cached_artifact(
            "torch-int8", folder, key, build, steps=3, export_dir=export_dir, progress=progress
        )
        manifest = read_manifest(artifact)
        if not built:
            stats = ActivationStats(absmax=load_file(str(artifact / STATS_FILE)))
            quantize(stats, (manifest.get("smoothquant") or {}).get("alpha"))
        self.quality = manifest.get("quality")
        self.recipe = {**manifest.get("recipe", {}), "smoothquant": manifest.get("smoothquant")}
        gate.enforce(self.quality, min_cosine=options.min_cosine, backend="torch", model=str(folder))
        self.dtype = "int8"
        log.info(
            "int8 Linear layers (SmoothQuant %s, per-token activations) for %s",
            manifest.get("smoothquant"),
            folder,
        )
