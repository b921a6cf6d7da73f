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
        "http": protocol_class(
            read_timeout=settings.request_read_timeout, max_connections=settings.max_connections
        ),
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def run_server(settings: Settings) -> int:
    """Load (the embedder, and the reranker of --rerank-model inside ``create_app``: both before
    the port is bound), serve until SIGTERM/SIGINT, drain both; the process exit code."""
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


# -- sglang's serving flags: the command people copy from sglang's docs starts a server --------------
SGLANG_FLAGS = [
    click.option("--model-path", "sglang_model_path", default=None, help="sglang's name for --model."),
    click.option(
        "--is-embedding",
        "sglang_is_embedding",
        is_flag=True,
        default=False,
        help="sglang: accepted; qembed always serves embeddings.",
    ),
    click.option(
        "--context-length",
        "sglang_context_length",
        type=int,
        default=None,
        help="sglang's name for --max-tokens (the window).",
    ),
    click.option(
        "--tp",
        "--tp-size",
        "sglang_tp",
        type=int,
        default=None,
        help="sglang: tensor parallelism; qembed runs one model per process, so only 1 (run replicas to scale out).",
    ),
    click.option(
        "--mem-fraction-static",
        "sglang_mem_fraction",
        type=float,
        default=None,
        help="sglang: accepted and ignored; qembed sizes its batches by --max-batch-tokens.",
    ),
    click.option(
        "--chat-template",
        "sglang_chat_template",
        default=None,
        help="sglang: refused; an embedding model must not get a chat template (it changes every vector).",
    ),
    click.option(
        "--trust-remote-code",
        "sglang_trust_remote_code",
        is_flag=True,
        default=False,
        help="sglang: accepted; qembed never runs code from a model folder.",
    ),
]


def _sglang(values: dict[str, Any]) -> list[str]:
    """Translate sglang's flags (popped from ``values``) into qembed's, in place; refuse the ones
    that cannot mean anything for an embedding server. Returns what to log about the others."""
    model_path = values.pop("sglang_model_path")
    is_embedding = values.pop("sglang_is_embedding")
    context_length = values.pop("sglang_context_length")
    tp = values.pop("sglang_tp")
    mem_fraction = values.pop("sglang_mem_fraction")
    chat_template = values.pop("sglang_chat_template")
    trust = values.pop("sglang_trust_remote_code")
    if model_path is not None:
        if values.get("model") not in (None, model_path):
            raise click.UsageError(
                f"--model {values['model']!r} and --model-path {model_path!r} disagree; give one of them."
            )
        values["model"] = model_path
    if context_length is not None:
        if values.get("max_tokens") not in (None, context_length):
            raise click.UsageError(
                "--max-tokens and --context-length (sglang's name for it) disagree; give one of them."
            )
        values["max_tokens"] = context_length
    if tp is not None and tp != 1:
        raise click.UsageError(
            f"--tp {tp}: qembed runs one model per process and does not split a model across GPUs "
            "(an embedding model fits on one); run one replica per GPU behind a load balancer instead."
        )
    if chat_template is not None:
        raise click.UsageError(
            "--chat-template: qembed never applies a chat template to an embedding model (the vectors would no longer "
            "match the reference); drop the flag. Instructions go in the request: task, instruction or prompt_name."
        )
    notes = []
    if is_embedding:
        notes.append("--is-embedding: accepted (qembed always serves embeddings)")
    if tp == 1:
        notes.append("--tp 1: accepted (one model per process)")
    if mem_fraction is not None:
        notes.append(
            f"--mem-fraction-static {mem_fraction}: ignored (batches are sized by --max-batch-tokens)"
        )
    if trust:
        notes.append("--trust-remote-code: accepted (qembed never runs code from a model folder)")
    return notes


# -- `--ray`: the same app as Ray Serve replicas (qembed.server.ray_serve) ------------------------
RAY_FLAGS = [
    click.option(
        "--ray",
        "ray_enabled",
        is_flag=True,
        default=False,
        help="Serve through Ray Serve: replicas, each with its own model and queue, behind Ray's proxy on "
        "--host/--port (needs the `ray` extra). docs/SCALING.md.",
    ),
    click.option(
        "--ray-address",
        "ray_address",
        default=None,
        help="With --ray: the cluster to join (auto, ray://host:10001); default RAY_ADDRESS, else a new local one.",
    ),
    click.option(
        "--replicas", "ray_replicas", type=int, default=None, help="With --ray: a fixed number of replicas."
    ),
    click.option(
        "--min-replicas",
        "ray_min_replicas",
        type=int,
        default=None,
        help="With --ray: autoscale, at least this many.",
    ),
    click.option(
        "--max-replicas",
        "ray_max_replicas",
        type=int,
        default=None,
        help="With --ray: autoscale, at most this many.",
    ),
    click.option(
        "--target-queued-tokens",
        "ray_target_queued_tokens",
        type=int,
        default=None,
        help="With --ray autoscaling: tokens waiting per replica to aim at (default 16384).",
    ),
    click.option(
        "--replica-cpus",
        "ray_num_cpus",
        type=float,
        default=None,
        help="With --ray: CPUs per replica (default 1).",
    ),
    click.option(
        "--replica-gpus",
        "ray_num_gpus",
        type=float,
        default=None,
        help="With --ray: GPUs per replica (default 0).",
    ),
]
RAY_OPTION_NAMES = {
    "ray_replicas": "replicas",
    "ray_min_replicas": "min_replicas",
    "ray_max_replicas": "max_replicas",
    "ray_target_queued_tokens": "target_queued_tokens",
    "ray_num_cpus": "num_cpus",
    "ray_num_gpus": "num_gpus",
}


def _ray(values: dict[str, Any]) -> tuple[bool, str | None, dict[str, Any]]:
    """Pop the --ray flags: (enabled, address, RayServeOptions changes); shape flags need --ray."""
    enabled = values.pop("ray_enabled")
    address = values.pop("ray_address")
    changes = {name: values.pop(key) for key, name in RAY_OPTION_NAMES.items()}
    changes = {name: value for name, value in changes.items() if value is not None}
    if not enabled and (changes or address):
        given = ", ".join("--" + k.replace("_", "-") for k in changes) or "--ray-address"
        raise click.UsageError(f"{given} shape a Ray Serve deployment: add --ray (or drop them).")
    return enabled, address, changes


def check_port_free(host: str, port: int) -> None:
    """Fail before the model loads (seconds to minutes) when the port is taken."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise click.UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror}); is another server running? Pick another --port."
            ) from None


def _with(options: list[Any]) -> Any:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.command(
    "serve",
    help="Serve an embedding model over HTTP: OpenAI-compatible /v1/embeddings, /embed, /tokenize, /metrics; "
    "with --rerank-model also a reranker (/v1/rerank, TEI's /rerank, vLLM's /score), each on its own model thread.",
)
@settings_options(SERVE_FIELDS)
@_with(SGLANG_FLAGS)
@_with(RAY_FLAGS)
def serve_cmd(**values: Any) -> None:
    from qembed.cli.main import setup_logging
    from qembed.cli.options import fail

    notes = _sglang(values)
    use_ray, ray_address, ray_changes = _ray(values)
    try:
        settings = build_settings(values)
    except Exception as exc:  # pydantic ValidationError: a bad flag or env value
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    setup_logging(settings.log_level)
    for note in notes:
        log.info("sglang flag %s", note)
    check_port_free(settings.host, settings.port)
    try:
        if use_ray:
            code = run_ray(settings, ray_changes, ray_address)
        else:
            code = run_server(settings)
    except QembedError as exc:
        fail(exc)
    sys.exit(code)


def run_ray(settings: Settings, changes: dict[str, Any], address: str | None) -> int:
    """``--ray``: validate the deployment's shape here (a usage error, exit 2), then serve on Ray."""
    from pydantic import ValidationError

    from qembed.server import ray_serve

    try:
        options = ray_serve.RayServeOptions(**changes)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise click.UsageError(f"{where + ': ' if where else ''}{first['msg']}") from None
    return ray_serve.run(settings, options, address=address)
