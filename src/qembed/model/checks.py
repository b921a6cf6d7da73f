"""Check a model folder before loading it.

Loading a half-downloaded folder with transformers gives a stack trace that names some
internal file; users need one message that lists exactly what is missing, where we looked,
and the command that fixes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from qembed.errors import IncompleteModelFolder

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Any one of these sets makes a loadable tokenizer.
TOKENIZER_SETS = (
    ("tokenizer.json",),
    ("vocab.json", "merges.txt"),  # byte-level BPE (Qwen, GPT-2 family)
    ("vocab.txt",),  # WordPiece (BERT family)
    ("sentencepiece.bpe.model",),
    ("spiece.model",),
    ("tokenizer.model",),
)


def _missing_weights(folder: Path) -> list[str]:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return []
    for index_name in WEIGHT_INDEXES:
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return [f"{index_name} (unreadable: {type(exc).__name__}: {exc})"]
            return [f"{s} (shard listed in {index_name})" for s in shards if not (folder / s).is_file()]
    return ["model.safetensors (or pytorch_model.bin, or a sharded *.index.json with its shards)"]


def missing_files(folder: Path) -> list[str]:
    """Names of the files a loadable model folder lacks (empty when complete)."""
    missing: list[str] = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    missing.extend(_missing_weights(folder))
    if not any(all((folder / f).is_file() for f in group) for group in TOKENIZER_SETS):
        missing.append("tokenizer files (tokenizer.json, or vocab.json + merges.txt, or vocab.txt)")
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            for module in json.loads(modules.read_text()):
                path = module.get("path") or ""
                if (
                    path
                    and "Pooling" in module.get("type", "")
                    and not (folder / path / "config.json").is_file()
                ):
                    missing.append(f"{path}/config.json (pooling settings named in modules.json)")
        except (ValueError, TypeError, AttributeError) as exc:
            missing.append(f"modules.json (unreadable: {type(exc).__name__}: {exc})")
    return missing


def check_model_folder(folder: Path, *, model_id: str | None = None) -> None:
    """Raise ``IncompleteModelFolder`` with one complete, actionable message (one line)."""
    hint = model_id or "<hub id>"
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise IncompleteModelFolder(
            f"Model folder {folder} {what}. Pass an existing model folder, a hub id (e.g. Qwen/Qwen3-Embedding-0.6B) "
            f"or the offline alias 'minilm'; to create the folder run `qembed download {hint} --dir {folder}`.",
            folder=str(folder),
            missing=["<folder>"],
        )
    missing = missing_files(folder)
    if not missing:
        return
    raise IncompleteModelFolder(
        f"Model folder {folder} is incomplete: missing {'; '.join(missing)}. "
        f"Fix: fetch the complete folder with `qembed download {hint} --dir {folder}` "
        f"(or copy the missing files from the model's hub page).",
        folder=str(folder),
        missing=missing,
    )
