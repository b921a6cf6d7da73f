"""What kind of reranker a folder holds, and loading it with transformers (torch only).

Two kinds reduce to one logit per (query, document) pair (``rerank/protocol.py``):

- ``qwen3-reranker``: a ``Qwen3ForCausalLM`` whose tokenizer has the single tokens ``yes`` and
  ``no``; the score is read from the last position's logits of those two tokens. The
  architecture alone does not tell a reranker from a chat model or from Qwen3-Embedding (whose
  config also says ``Qwen3ForCausalLM``), so the model id / folder name must contain
  "reranker", or the caller says ``kind="qwen3-reranker"``; a sentence-transformers folder
  with a Pooling module is an embedding model and refused either way.
- ``cross-encoder``: ``*ForSequenceClassification`` with exactly one label (sentence-transformers'
  ``CrossEncoder`` folders); more labels is a classifier (NLI, sentiment), not a reranker.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from qembed.errors import UnsupportedModel
from qembed.rerank.protocol import RerankKind

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

KINDS: tuple[RerankKind, ...] = ("qwen3-reranker", "cross-encoder")
ALIASES: dict[str, str] = {
    "qwen3-reranker-0.6b": "Qwen/Qwen3-Reranker-0.6B",
    "qwen3-reranker-4b": "Qwen/Qwen3-Reranker-4B",
    "qwen3-reranker-8b": "Qwen/Qwen3-Reranker-8B",
    "ms-marco-minilm": "cross-encoder/ms-marco-MiniLM-L6-v2",
}
EXAMPLES = "Rerankers: Qwen3-Reranker (e.g. Qwen/Qwen3-Reranker-0.6B) or a cross-encoder (e.g. cross-encoder/ms-marco-MiniLM-L6-v2)."


def hub_id(name: str) -> str:
    """A reranker alias expanded (qwen3-reranker-0.6b/4b/8b, ms-marco-minilm); anything else as typed."""
    return ALIASES.get(name.strip().lower(), name.strip())


def _config(folder: Path) -> dict[str, Any]:
    try:
        return cast(dict[str, Any], json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError) as exc:
        raise UnsupportedModel(f"{folder}/config.json cannot be read ({exc}).") from exc


def _has_pooling(folder: Path) -> bool:
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return False
    return any("Pooling" in str(m.get("type", "")) for m in modules if isinstance(m, dict))


def num_labels(config: dict[str, Any]) -> int:
    """Labels of a classification head as transformers counts them (id2label wins; 2 by default)."""
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    return int(config.get("num_labels", 2))


def detect_kind(folder: Path, model_id: str, kind: RerankKind | None = None) -> RerankKind:
    """The kind of reranker in ``folder``, or ``UnsupportedModel`` saying what it is instead."""
    if kind is not None and kind not in KINDS:
        raise UnsupportedModel(f"kind={kind!r} is not a reranker kind; choose one of {', '.join(KINDS)}.")
    config = _config(folder)
    archs = [str(a) for a in config.get("architectures") or []]
    shown = ", ".join(archs) or f"model_type {config.get('model_type')!r}"
    if _has_pooling(folder):
        raise UnsupportedModel(
            f"{model_id} is an embedding model (a sentence-transformers folder with a Pooling module; {shown}), "
            f"not a reranker: load it as the embedding model (--model / Embedder). {EXAMPLES}"
        )
    if any(a.endswith("ForSequenceClassification") for a in archs):
        labels = num_labels(config)
        if labels != 1:
            raise UnsupportedModel(
                f"{model_id} is a classifier with {labels} labels ({shown}), not a reranker: a cross-encoder reranker "
                f"has one output (num_labels=1). {EXAMPLES}"
            )
        if kind == "qwen3-reranker":
            raise UnsupportedModel(
                f"{model_id} is a cross-encoder ({shown}), not a Qwen3-Reranker; drop kind=."
            )
        return "cross-encoder"
    if any(a.endswith("ForCausalLM") for a in archs):
        if config.get("model_type") != "qwen3":
            raise UnsupportedModel(
                f"{model_id} is a causal LM of type {config.get('model_type')!r} ({shown}); the only causal-LM "
                f"reranker qembed runs is Qwen3-Reranker. {EXAMPLES}"
            )
        if kind == "cross-encoder":
            raise UnsupportedModel(
                f"{model_id} is a Qwen3ForCausalLM, not a cross-encoder; drop kind= (or pass kind='qwen3-reranker')."
            )
        named = "reranker" in model_id.lower() or "reranker" in folder.name.lower()
        if kind is None and not named:
            raise UnsupportedModel(
                f"{model_id} is a Qwen3ForCausalLM without 'reranker' in its name: a chat model or Qwen3-Embedding, "
                "whose scores would be meaningless. If it is a Qwen3-Reranker, pass kind='qwen3-reranker'."
            )
        return "qwen3-reranker"
    raise UnsupportedModel(
        f"{model_id} is not a reranker ({shown}): a base or embedding model has no relevance head. {EXAMPLES}"
    )


def yes_no_ids(tokenizer: Any, model_id: str) -> tuple[int, int]:
    """The ids of the single tokens "yes" and "no" (Qwen3-Reranker's answer), or a clear error."""
    ids = []
    for word in ("yes", "no"):
        encoded = tokenizer.encode(word, add_special_tokens=False)
        token = tokenizer.convert_tokens_to_ids(word)
        if len(encoded) != 1 or encoded[0] != token or token == tokenizer.unk_token_id:
            raise UnsupportedModel(
                f"{model_id}'s tokenizer has no single token {word!r} (it gives {encoded}): not a Qwen3-Reranker "
                "tokenizer, so its yes/no score cannot be read."
            )
        ids.append(int(token))
    return ids[0], ids[1]


def load_model(folder: Path, kind: RerankKind, *, device: str, dtype: torch.dtype) -> Any:
    """The transformers model of ``kind`` (SDPA attention), in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from qembed.model.backends.torch_backend import _report_loading, quiet_transformers

    auto: Any = AutoModelForCausalLM if kind == "qwen3-reranker" else AutoModelForSequenceClassification
    kwargs: dict[str, Any] = {"attn_implementation": "sdpa", "output_loading_info": True}
    with quiet_transformers():
        try:
            model, loading = auto.from_pretrained(str(folder), dtype=dtype, **kwargs)
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            model, loading = auto.from_pretrained(str(folder), torch_dtype=dtype, **kwargs)
    _report_loading(folder, loading)
    return model.to(device).eval()
