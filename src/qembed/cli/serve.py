"""``qembed serve``: load the model, then serve it over HTTP with uvicorn.

The model is loaded *before* the port is bound, so a wrong ``--model`` is one error line
and exit code 2, not a server that answers 500s. Every Settings field is a flag here
(``--max-batch-tokens``) and an env var (``QEMBED_MAX_BATCH_TOKENS``).

SIGTERM (and Ctrl-C) are graceful: uvicorn stops accepting connections, every accepted
request finishes (up to ``--shutdown-timeout``), the model worker drains, and the process
exits 0. (uvicorn re-raises the signal after a graceful stop, which would make the exit
status 143; a no-op Python handler installed before it starts absorbs that.)
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import click

from qembed.cli.options import build_settings, settings_options
from qembed.errors import QembedError
from qembed.settings import Settings

log = logging.getLogger("qembed.serve")
SERVE_FIELDS = list(Settings.model_fields)


def _absorb(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    """Runs only after uvicorn's graceful shutdown re-raises the signal it handled."""


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> Any:
    """The ``uvicorn.Config`` of ``qembed serve`` for ``app`` (tests run the same one).

    h11 with qembed's read timeout and connection cap (``qembed.server.protocol``); the
    keep-alive timeout from ``--timeout-keep-alive``."""
    import uvicorn

    from qembed.server.protocol import protocol_class

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "access_log": False,  # qembed logs one line per request itself (with inputs and tokens)
        "timeout_graceful_shutdown": settings.shutdown_timeout,  # uvicorn annotates int; it only awaits with it, a float works
        "timeout_keep_alive": settings.timeout_keep_alive,
        "http": protocol_class(read_timeout=settings.request_read_timeout, max_connections=settings.max_connections),
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def run_server(settings: Settings) -> int:
    """Load, serve until SIGTERM/SIGINT, drain; the process exit code."""
    import uvicorn

    from qembed.embedding.embedder import Embedder
    from qembed.server.app import create_app

    embedder = Embedder(settings=settings)
    app = create_app(settings, embedder)
    service = app.state.service

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service.begin_drain()  # new requests (on open connections) get 503 from now on
            super().handle_exit(sig, frame)

    server = Server(uvicorn_config(app, settings))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _absorb)
    server.run()
    return 0 if server.started else 1


def register(group: click.Group) -> None:
    group.add_command(serve_cmd)


@click.command("serve", help="Serve one model over HTTP: OpenAI-compatible /v1/embeddings, /embed, /tokenize, /metrics.")
@settings_options(SERVE_FIELDS)
def serve_cmd(**values: Any) -> None:
    from qembed.cli.main import fail, setup_logging

    try:
        settings = build_settings(values)
    except Exception as exc:  # pydantic ValidationError: a bad flag or env value
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    setup_logging(settings.log_level)
    try:
        code = run_server(settings)
    except QembedError as exc:
        fail(exc)
    sys.exit(code)
