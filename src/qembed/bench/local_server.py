"""Start ``qembed serve`` as a child process for a benchmark, with exactly the bench's settings.

Settings travel as QEMBED_* environment variables (every Settings field is one), so this
module needs no knowledge of the serve command's flags, and a field added tomorrow (a new
backend option) reaches the server unchanged.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from qembed.bench.procs import ManagedServer, free_port, settings_env
from qembed.errors import ServerUnavailable

# Settings that describe the bench process, not the server's behaviour.
_NOT_FORWARDED = ("host", "port", "api_key")


def serve_available() -> str | None:
    """None when ``qembed serve`` exists, else the reason it does not."""
    try:
        if importlib.util.find_spec("qembed.cli.serve") is None:
            return "qembed.cli.serve is not importable (the server is not installed in this build)"
    except (ImportError, ValueError) as exc:
        return f"qembed.cli.serve is not importable: {type(exc).__name__}: {exc}"
    return None


def qembed_server(
    settings: dict[str, Any], log_path: Path, *, api_key: str | None = None, port: int | None = None
) -> ManagedServer:
    """A (not yet started) qembed server on 127.0.0.1 serving ``settings``."""
    reason = serve_available()
    if reason:
        raise ServerUnavailable(reason)
    port = port or free_port()
    env = settings_env(settings, skip=_NOT_FORWARDED)
    env.update({"QEMBED_HOST": "127.0.0.1", "QEMBED_PORT": str(port)})
    if api_key:
        env["QEMBED_API_KEY"] = api_key
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "qembed.cli.main", "serve"]
    return ManagedServer("qembed serve", command, f"{base}/ready", base + "/v1", log_path, env=env)
