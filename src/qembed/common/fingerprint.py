"""The one fingerprint of a model folder: it changes whenever the vectors could.

Used as the model part of every cache key: the export cache
(``qembed.model.backends.artifacts``), the embedding cache namespace
(``qembed.embedding.cache``) and eval's target identity (``qembed.eval.targets``).

What goes in: the hub commit when the folder is a huggingface_hub snapshot
(``.../snapshots/<commit>``), the bytes of ``config.json``, and the relative path, size and
mtime of every weight file in the folder and its subfolders (an edited, rebuilt or
re-downloaded checkpoint gets a new fingerprint). Hidden folders are skipped: qembed
writes its own exports to ``<model>/.qembed/`` and hub downloads keep ``.cache/`` there,
and neither is part of the model. Weight files that are symlinks (hub snapshots) are
stat'ed through to their blob.

A folder holding only top-level weights keeps the digest earlier qembed versions gave it,
so existing exports stay valid.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf")


def weight_files(folder: Path) -> list[tuple[str, int, int]]:
    """(posix path relative to ``folder``, size, mtime_ns) of each weight file, sorted by path."""
    folder = Path(folder)
    out: list[tuple[str, int, int]] = []
    if not folder.is_dir():
        return out
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.endswith(WEIGHT_SUFFIXES):
                path = Path(root) / name
                try:
                    st = path.stat()  # follows hub-cache symlinks to the blob
                except OSError:  # a dangling symlink: not a weight file we could load
                    continue
                out.append((path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    out.sort()
    return out


def model_fingerprint(folder: Path) -> str:
    """A hex digest of the model folder (see the module docstring for what it covers)."""
    folder = Path(folder)
    h = hashlib.sha256()
    if folder.parent.name == "snapshots":  # huggingface_hub cache: the folder name is the commit
        h.update(f"commit:{folder.name}\n".encode())
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for rel, size, mtime_ns in weight_files(folder):
        h.update(f"{rel}:{size}:{mtime_ns}\n".encode())
    return h.hexdigest()
