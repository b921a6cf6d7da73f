"""Model FLOPs for MFU: what a forward pass over real (unpadded) tokens must compute.

Per token, each weight matrix costs one multiply and one add: 2 x (non-embedding
parameters). Attention adds, per layer and sequence of L tokens, QK^T and AV:
2 x L^2 x d_attn each, 4 x L^2 x d_attn together (full matrices, no causal discount, as
in the usual MFU definition). Embedding lookups are not matmuls and are left out. Padding
is not counted: MFU measures useful work, so wasted padding shows up as lower MFU.

Parameter counts come from the safetensors headers, so this works for any folder without
loading the weights.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelFacts:
    model_type: str
    params: int
    non_embedding_params: int
    layers: int
    attention_dim: int
    hidden_size: int
    checkpoint_dtype: str | None
    size_on_disk_mb: float

    @property
    def linear_flops_per_token(self) -> float:
        return 2.0 * self.non_embedding_params

    def flops(self, lengths: Sequence[int]) -> float:
        """FLOPs of one forward pass over sequences of these lengths."""
        attention = 4.0 * self.layers * self.attention_dim
        return sum(self.linear_flops_per_token * n + attention * n * n for n in lengths)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gflops_per_token_linear"] = round(self.linear_flops_per_token / 1e9, 4)
        return data


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def model_facts(folder: Path) -> ModelFacts:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors file to count parameters from")
    params = embedding = 0
    for file in files:
        for name, shape in _safetensors_shapes(file).items():
            count = 1
            for dim in shape:
                count *= dim
            params += count
            if "embed" in name:  # embed_tokens, word/position/token_type_embeddings
                embedding += count
    hidden = int(config.get("hidden_size") or config.get("d_model") or 0)
    heads = int(config.get("num_attention_heads") or 1)
    head_dim = int(config.get("head_dim") or (hidden // heads if heads else 0))
    return ModelFacts(
        model_type=str(config.get("model_type", "?")),
        params=params,
        non_embedding_params=params - embedding,
        layers=int(config.get("num_hidden_layers") or config.get("n_layer") or 0),
        attention_dim=heads * head_dim,
        hidden_size=hidden,
        checkpoint_dtype=config.get("torch_dtype") or config.get("dtype"),
        size_on_disk_mb=round(sum(f.stat().st_size for f in files) / 2**20, 1),
    )
