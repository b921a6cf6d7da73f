"""Tables for the README, generated so that they cannot drift from the code.

``python -m qembed.server.docs FILE...`` rewrites, in each file, the text between
``<!-- qembed:settings-table -->`` and ``<!-- /qembed:settings-table -->`` (every
Settings field: flag, env var, default, description) and the same for
``qembed:errors-table``. ``--check`` exits 1 when a file is out of date (a test runs it).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from qembed.settings import Settings

# (status, code, when, message as the client sees it). Codes are the ones the server sends
# (tests/server/test_docs.py checks each appears in the server's code).
ERRORS: list[tuple[int, str, str, str]] = [
    (
        400,
        "invalid_request",
        "Bad JSON, a body that is not an object, missing `input`, wrong types, an unknown field",
        "`input[1] is a number; a list input holds only strings ...`",
    ),
    (
        400,
        "invalid_input",
        "Empty list or empty string, token id out of the vocabulary, `dimensions` out of range, unknown `prompt_name`/`task`",
        "`input[2] is an empty string; every input needs at least one character.`",
    ),
    (
        400,
        "foreign_token_ids",
        "Token-id input the served tokenizer would not produce (decoding and re-encoding gives other ids): likely another tokenizer's ids, e.g. LangChain's tiktoken ids (`--allow-foreign-token-ids` accepts them)",
        "`input[0] is not a tokenization by ...'s tokenizer (...). LangChain's OpenAIEmbeddings sends tiktoken ids by default: pass check_embedding_ctx_length=False ...`",
    ),
    (
        400,
        "context_length_exceeded",
        'An input longer than the window with `long_text: "error"`',
        "`input[0] has 9000 tokens (...); the limit is 8192. Shorten it, or send long_text='chunk' ...`",
    ),
    (
        400,
        "wrong_model_kind",
        "`model` names the other kind of served model: the reranker on `/v1/embeddings`, the embedder on `/v1/rerank`, `/rerank` or `/score`",
        "`The model 'Qwen3-Reranker-0.6B' is the reranker served here, not an embedding model: send it to /v1/rerank ...`",
    ),
    (
        401,
        "invalid_api_key",
        "`--api-key` is set and the Bearer token is missing or wrong",
        "`Incorrect API key provided.`",
    ),
    (
        404,
        "model_not_found",
        "`model` is not a name of the served model (also: Qwen3 asked of a server that fell back to MiniLM)",
        "`The model 'x' is not served here; this server serves 'Qwen/Qwen3-Embedding-0.6B'. ...`",
    ),
    (
        404,
        "not_found",
        "Unknown route; a search index that does not exist",
        "`No route GET /v2/embeddings; see /docs for the routes.`",
    ),
    (
        404,
        "reranker_not_served",
        "`/v1/rerank`, `/v2/rerank`, `/rerank`, `/score` on a server started without `--rerank-model`",
        "`No reranker is served here. Start the server with one beside the embedder: qembed serve --model <embedder> --rerank-model ...`",
    ),
    (405, "method_not_allowed", "Wrong HTTP method", "`GET is not allowed on /v1/embeddings.`"),
    (
        413,
        "payload_too_large",
        "Body over `--payload-limit` (Content-Length or bytes received)",
        "`The request body is 9000000 bytes; the limit is 8000000 (--payload-limit ...)`",
    ),
    (
        413,
        "too_many_inputs",
        "More inputs than `--max-client-batch-size`",
        "`This request has 2049 inputs; the limit is 2048 per request. ... --max-client-batch-size`",
    ),
    (
        413,
        "request_too_large",
        "More tokens of model work than `--max-request-tokens` (windows, prompts and special tokens counted)",
        "`This request needs 2100000 tokens of model work (...); the limit is 1048576 per request. ... --max-request-tokens`",
    ),
    (
        429,
        "queue_full",
        "Over `--max-concurrent-requests` or `--max-queued-tokens`; the `Retry-After` header says when to retry",
        "`The queue is full (... tokens waiting ...); retry later.`",
    ),
    (
        499,
        "client_closed_request",
        "Logged (and counted) when the client went away before its answer: its unstarted windows were dropped (`qembed_dropped_windows`); the client never sees this body",
        "`The client closed the connection before its vectors were ready; its queued work was dropped.`",
    ),
    (
        500,
        "non_finite_output",
        'The model produced NaN/inf (counted in `qembed_errors_total{kind="non_finite_output"}`)',
        "`The model produced non-finite values (NaN/inf); no vectors were returned.`",
    ),
    (
        500,
        "model_failure",
        "The model raised on a batch (e.g. out of memory); only the requests in that batch fail",
        "`The model failed on a batch of 64 windows (...). If this is an out-of-memory error, lower --max-batch-tokens.`",
    ),
    (
        500,
        "model_error",
        "The model backend failed outside a batch (a damaged ONNX/OpenVINO cache, a failed conversion); normally at start-up, before the server listens",
        "`ONNX Runtime cannot load .../model.onnx (...); delete ... to export again.`",
    ),
    (
        500,
        "internal_error",
        "A bug: an unexpected exception, or a broken promise between qembed's own parts (e.g. a re-ranker returning the wrong number of scores); the log has the traceback",
        "`Internal server error (KeyError); see the server log.`",
    ),
    (
        503,
        "shutting_down",
        "A request arriving after SIGTERM (accepted ones still finish); an accepted one still unfinished when `--shutdown-timeout` is nearly over; `/ready` during shutdown",
        "`The server is shutting down; retry on another instance.`",
    ),
    (
        503,
        "not_ready",
        "`/ready` before the warm-up batch is done",
        "`Warming up: the first model batch is running.`",
    ),
    (
        503,
        "warmup_failed",
        "`/ready` when the warm-up batch failed (it stays 503; the message has the model's error)",
        "`warm-up failed: ...`",
    ),
    (
        503,
        "index_damaged",
        "`serve --index`: the index fails a check (vector file cut short or missing, checksum, NaN rows, a corrupt SQLite file); `/ready` and `/v1/search` answer this while it lasts, the process stays up",
        "`index 'notes' is damaged: vectors-1.f32 has 1024 bytes; the committed rows need 8192. Rebuild it with ... --rebuild.`",
    ),
    (
        503,
        "index_busy",
        "`POST /v1/index` while another writer (a `qembed index` run) holds the index's lock for more than 10 s; names the holder",
        "`index 'notes' is being written by pid 4242 on host h (qembed index, since 01:02:03 UTC); waited 10 s. ...`",
    ),
    (
        503,
        "worker_stopped",
        "`/health` when the model worker thread has stopped (restart the process)",
        "`The model worker has stopped.`",
    ),
    (
        503,
        "replica_unavailable",
        "`serve --ray`: the replica serving the request died before answering and the one retry (on another replica) failed too; `Retry-After: 1`",
        "`The replica serving this request stopped before answering (and so did the retry); the request was not completed. Retry it.`",
    ),
    (
        503,
        "no_replica_available",
        "`serve --ray`: Ray's proxy has no replica that can take the request (none running, or all at `max_ongoing_requests` with the proxy queue full); `Retry-After: 1`",
        "Ray's message, e.g. `Deployment 'qembed' has no available replicas.`",
    ),
    (
        503,
        "request_body_lost",
        "`serve --ray`: Ray re-routed the request after a replica died and its body never reached the new replica (within `--request-read-timeout`); the proxy retries it once, so a client sees this only without the proxy middleware",
        "`The request body did not reach the replica (it was re-routed after another replica died); retry the request.`",
    ),
]


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "(none)"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def _flag(name: str) -> str:
    field = Settings.model_fields[name]
    flag = "--" + name.replace("_", "-")
    if field.annotation is bool:
        return f"`{flag}` / `--no-{name.replace('_', '-')}`"
    return f"`{flag}`"


def settings_table() -> str:
    """Markdown: every Settings field as flag, env var, default and description."""
    rows = ["| Flag | Env var | Default | What it does |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| {_flag(name)} | `QEMBED_{name.upper()}` | {_default(name)} | {description} |")
    return "\n".join(rows)


def errors_table() -> str:
    rows = ["| Status | `code` | When | Message (example) |", "|---|---|---|---|"]
    rows += [f"| {status} | `{code}` | {when} | {message} |" for status, code, when, message in ERRORS]
    return "\n".join(rows)


TABLES: dict[str, Callable[[], str]] = {"settings-table": settings_table, "errors-table": errors_table}


def render(text: str) -> str:
    """``text`` with every marked table regenerated."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- qembed:{name} -->\n)(?:.*?\n)?(<!-- /qembed:{name} -->)", re.S)

        def fill(m: re.Match[str], make: Callable[[], str] = make) -> str:
            return m.group(1) + make() + "\n" + m.group(2)

        text = pattern.sub(fill, text)
    return text


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path in (Path(a) for a in argv if a != "--check"):
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            if check:
                stale.append(str(path))
            else:
                path.write_text(new, encoding="utf-8")
    if stale:
        print(
            f"out of date (run python -m qembed.server.docs {' '.join(stale)}): {', '.join(stale)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
