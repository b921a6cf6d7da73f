"""The module pipeline a model folder defines: Transformer -> Pooling -> Normalize.

We read the sentence-transformers files (modules.json, 1_Pooling/config.json,
2_Normalize, config_sentence_transformers.json, sentence_bert_config.json) when present,
and otherwise default from the architecture, so that a plain transformers folder of a
known family embeds the way its authors meant.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qembed.errors import UnsupportedModel

log = logging.getLogger(__name__)

Pooling = Literal["lasttoken", "mean", "cls"]

# Architectures that are decoder-only (causal) embedders: last-token pooling, left padding.
LAST_TOKEN_MODEL_TYPES = {"qwen3", "qwen2", "mistral", "llama", "gemma2", "gemma3_text"}
# Model types trained with Matryoshka Representation Learning (any prefix >= 32 is usable).
MRL_MODEL_TYPES = {"qwen3"}
MRL_MIN_DIMENSIONS = 32
# Qwen3-Embedding is trained with an 8192-token context; documents beyond are windowed.
DEFAULT_WINDOW = {"qwen3": 8192}

_POOLING_KEYS: dict[str, Pooling] = {
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
}
_UNSUPPORTED_POOLING_KEYS = (
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
)


@dataclass(frozen=True)
class PipelineSpec:
    """How a folder turns token states into one vector."""

    model_type: str
    hidden_size: int
    pooling: Pooling
    normalize: bool
    include_prompt: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    max_tokens: int = 512
    supports_mrl: bool = False
    # Prompt family (qembed.model.families): which prefix a task gives each side. Empty:
    # detected from model_type and prompts when asked (specs built by hand in tests).
    prompt_family: str = ""

    @property
    def padding_side(self) -> Literal["left", "right"]:
        # Left padding keeps the pooled token at a fixed position for causal models.
        return "left" if self.pooling == "lasttoken" else "right"

    @property
    def instruction_aware(self) -> bool:
        """Trained with 'Instruct: ...\\nQuery:' prompts (Qwen3-Embedding style)."""
        return self.model_type in MRL_MODEL_TYPES or any(
            p.startswith("Instruct:") for p in self.prompts.values()
        )


def _read_json(path: Path) -> Any:
    """The parsed JSON file (an object or a list, untyped: callers check what they read), None when absent."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedModel(
            f"{path} is not valid JSON ({exc}); the folder is damaged: fetch it again with `qembed download`."
        ) from exc


def _pooling_from_config(cfg: dict, folder: Path) -> tuple[Pooling, bool]:
    if cfg.get("pooling_mode") in ("lasttoken", "mean", "cls"):  # newer single-key format
        return cfg["pooling_mode"], bool(cfg.get("include_prompt", True))
    chosen = [mode for key, mode in _POOLING_KEYS.items() if cfg.get(key)]
    unsupported = [k for k in _UNSUPPORTED_POOLING_KEYS if cfg.get(k)]
    if unsupported or len(chosen) != 1:
        raise UnsupportedModel(
            f"{folder}/1_Pooling/config.json asks for pooling {chosen + unsupported}; qembed supports exactly one of "
            "lasttoken, mean, cls. Use sentence-transformers for this model."
        )
    return chosen[0], bool(cfg.get("include_prompt", True))


def load_pipeline(folder: Path, *, model_id: str | None = None) -> PipelineSpec:
    """Read the pipeline a model folder defines, defaulting from its architecture.

    ``model_id`` (hub id or alias) helps detect the prompt family: a hub cache folder is
    named by commit hash, so the folder name alone may say nothing.
    """
    from qembed.model.families import detect_family

    config = _read_json(folder / "config.json") or {}
    model_type = str(config.get("model_type", "")).lower()
    hidden = int(config.get("hidden_size") or config.get("d_model") or 0)
    if not hidden:
        raise UnsupportedModel(
            f"{folder}/config.json has no hidden_size; is this a transformer model folder?"
        )

    modules = _read_json(folder / "modules.json")
    pooling: Pooling | None = None
    include_prompt = True
    normalize = False
    if isinstance(modules, list):
        for module in modules:
            kind = module.get("type", "").rsplit(".", 1)[-1]
            path = folder / (module.get("path") or "")
            if kind == "Transformer":
                continue
            if kind == "Pooling":
                pooling, include_prompt = _pooling_from_config(_read_json(path / "config.json") or {}, folder)
            elif kind == "Normalize":
                normalize = True
            else:
                raise UnsupportedModel(
                    f"{folder}/modules.json has a '{kind}' module; qembed runs Transformer -> Pooling -> Normalize "
                    "pipelines. Use sentence-transformers for this model."
                )
    if pooling is None:
        if model_type in LAST_TOKEN_MODEL_TYPES:
            pooling, normalize = "lasttoken", True
        else:
            pooling = "mean"
        log.info(
            "no sentence-transformers pooling config in %s: using %s pooling for %s",
            folder,
            pooling,
            model_type,
        )

    st_config = _read_json(folder / "config_sentence_transformers.json") or {}
    prompts = {k: v for k, v in (st_config.get("prompts") or {}).items() if isinstance(v, str)}
    bert_config = _read_json(folder / "sentence_bert_config.json") or {}
    max_positions = int(config.get("max_position_embeddings") or 512)
    max_tokens = int(bert_config.get("max_seq_length") or DEFAULT_WINDOW.get(model_type) or max_positions)
    max_tokens = min(max_tokens, max_positions)
    return PipelineSpec(
        model_type=model_type,
        hidden_size=hidden,
        pooling=pooling,
        normalize=normalize,
        include_prompt=include_prompt,
        prompts=prompts,
        default_prompt_name=st_config.get("default_prompt_name"),
        max_tokens=max_tokens,
        supports_mrl=model_type in MRL_MODEL_TYPES,
        prompt_family=detect_family(model_type, prompts, model_id=model_id, folder=folder),
    )
