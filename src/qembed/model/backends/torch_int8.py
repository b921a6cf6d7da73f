"""torch with dynamic int8 quantization of every ``nn.Linear`` (CPU only).

No export and no extra package: ``torch.ao.quantization.quantize_dynamic`` swaps each
Linear for one that keeps int8 weights (per output channel: per-tensor scales lose too
much on MiniLM, whose weight rows differ in range) and quantizes its input per batch at
run time (fbgemm/x86 kernels, VNNI where the CPU has it). Attention, norms and
activations stay float32. It is the int8 option that needs nothing beyond torch; the
ONNX Runtime and OpenVINO backends run the same arithmetic with fewer float32 ops around
it (see docs/PERFORMANCE.md for what each measured).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from qembed.errors import InputError
from qembed.model.backends.torch_backend import TorchBackend
from qembed.model.pipeline import PipelineSpec

log = logging.getLogger(__name__)


class TorchInt8Backend(TorchBackend):
    name = "torch"

    def __init__(self, folder: Path, spec: PipelineSpec, *, device: str = "auto", dtype: str = "auto", threads: int | None = None) -> None:
        import torch

        if device not in ("auto", "cpu"):
            raise InputError(f"--quantize int8 with the torch backend runs on the CPU only, not {device!r}.", param="quantize")
        if dtype not in ("auto", "float32"):
            raise InputError("--quantize int8 with the torch backend keeps float32 around the int8 layers; leave --dtype auto.", param="dtype")
        super().__init__(folder, spec, device="cpu", dtype="float32", threads=threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)
        self.dtype = "int8"
        log.info("quantized the Linear layers of %s to int8 (torch dynamic quantization)", folder)
