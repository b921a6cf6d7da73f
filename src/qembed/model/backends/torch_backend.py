"""The torch backend: transformers' AutoModel with SDPA attention, CPU or CUDA."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from qembed.model.backends.hardware import available_cores, native_bf16
from qembed.model.pipeline import PipelineSpec
from qembed.model.pooling import pool

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def checkpoint_dtype(folder: Path) -> str | None:
    """The dtype the weights were published in (config.json ``torch_dtype``/``dtype``)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("torch_dtype") or config.get("dtype")
    return str(value) if value else None


def pick_dtype(dtype: str, device: str, published: str | None = None) -> str:
    """What ``auto`` means: the fastest dtype that loses nothing the checkpoint has.

    CUDA: bfloat16. CPU: bfloat16 when the weights are published in bf16 (Qwen3) and the
    CPU computes bf16 natively (AVX512-BF16/AMX: about 2x float32 for batches and 4x for a
    single query on a 2-core EPYC); float32 otherwise (float32 checkpoints such as MiniLM,
    and CPUs that would emulate bf16 several times slower). Pin ``float32`` for bit-level
    parity with a float32 reference."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if published == "bfloat16" and native_bf16() else "float32"


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load chatter (the "Loading weights" progress bar, info and
    warning lines) for one load. Errors still raise; what matters in the load report
    (weights missing from the folder) is re-told by ``_report_loading``."""
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    if bars:
        tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


# Weights a checkpoint may lack without changing the embeddings (AutoModel's BERT pooler).
_HARMLESS_MISSING = ("pooler.",)


def _report_loading(folder: Path, loading: dict | None) -> None:
    """Warn (once, in qembed's words) when the folder's weights do not cover the model."""
    if not loading:
        return
    missing = sorted(k for k in loading.get("missing_keys") or () if not k.startswith(_HARMLESS_MISSING))
    mismatched = sorted(
        str(k[0] if isinstance(k, tuple) else k) for k in loading.get("mismatched_keys") or ()
    )
    if missing or mismatched:
        shown = ", ".join((missing + mismatched)[:8]) + (" ..." if len(missing) + len(mismatched) > 8 else "")
        log.warning(
            "the weights in %s do not cover the model: %d missing, %d with the wrong shape (%s). Those parameters are "
            "randomly initialised and the vectors will be wrong; check that the folder is complete and matches config.json.",
            folder,
            len(missing),
            len(mismatched),
            shown,
        )
    unexpected = loading.get("unexpected_keys") or ()
    if unexpected:
        log.debug("%d unused weights in %s (e.g. %s)", len(unexpected), folder, sorted(unexpected)[0])


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        folder: Path,
        spec: PipelineSpec,
        *,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
    ) -> None:
        from transformers import AutoModel

        self.spec = spec
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device, checkpoint_dtype(folder))
        if self.device == "cpu":
            torch.set_num_threads(threads or available_cores())
        kwargs = {"attn_implementation": "sdpa", "output_loading_info": True}
        with quiet_transformers():
            try:
                model, loading = AutoModel.from_pretrained(str(folder), dtype=_DTYPES[self.dtype], **kwargs)
            except TypeError:  # transformers < 4.56 calls it torch_dtype
                model, loading = AutoModel.from_pretrained(
                    str(folder), torch_dtype=_DTYPES[self.dtype], **kwargs
                )
        _report_loading(folder, loading)
        self.model = model.to(self.device).eval()
        log.info("loaded %s on %s (%s, %d threads)", folder, self.device, self.dtype, torch.get_num_threads())

    @torch.inference_mode()
    def embed(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, skip: np.ndarray | None = None
    ) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        skip_t = torch.from_numpy(skip).to(self.device) if skip is not None else None
        return pool(states, mask, self.spec.pooling, skip_t).cpu().numpy()
