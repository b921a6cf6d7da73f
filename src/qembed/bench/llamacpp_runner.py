"""The llama.cpp side of the llama.cpp peer: a standalone script run by the *peer venv's* Python.

It imports nothing of qembed (qembed is not installed in that venv) and only
``llama_cpp`` and the standard library, so that the numbers are llama-cpp-python's own.
It loads one GGUF with ``llama_cpp.Llama(..., embedding=True)`` and answers JSON lines on
its stdin/stdout, one request at a time:

- ``{"cmd": "batch", "texts": [...], "batch_size": n}``: embed the texts ``n`` per
  ``Llama.embed`` call (llama.cpp packs each call into one decode of up to ``n_batch``
  tokens); answers the seconds it took (timed here, next to the engine), the vectors'
  count and dimension and the tokens llama.cpp ran;
- ``{"cmd": "single", "text": ...}``: one query, timed here;
- ``{"cmd": "vectors", "texts": [...]}``: the L2-normalised vectors, float32, base64;
- ``{"cmd": "tokenize", "texts": [...]}``: the token ids ``Llama.embed`` feeds the model
  (``tokenize(text, add_bos=True, special=False)``: the GGUF's own BOS/EOS rules);
- ``{"cmd": "stop"}``.

The first line it writes is ``{"ready": {...}}`` (versions, the GGUF metadata llama.cpp
read, the context it built, the CPU features ggml was compiled for) or ``{"error": ...}``.
llama.cpp logs on stderr; the protocol's stdout is a private copy of fd 1, and fd 1 itself
is pointed at stderr, so a stray C-level ``printf`` can never corrupt an answer.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import traceback
from typing import Any

# The GGUF keys the bench shows and checks (the arch prefix, e.g. "qwen3.", is filled in).
_META_KEYS = (
    "general.architecture", "general.file_type", "general.name", "{arch}.pooling_type", "{arch}.context_length",
    "{arch}.embedding_length", "{arch}.block_count", "tokenizer.ggml.model", "tokenizer.ggml.pre",
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.padding_token_id",
)  # fmt: skip


def _protocol_stream() -> Any:
    """A private duplicate of stdout for answers; fd 1 then goes to stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def load(config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model and what the report records about it."""
    import llama_cpp

    began = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=config["gguf"],
        embedding=True,
        pooling_type=int(config["pooling_type"]),
        n_ctx=int(config["n_ctx"]),
        n_batch=int(config["n_batch"]),
        n_ubatch=int(config["n_ubatch"]),
        n_threads=int(config["threads"]),
        n_threads_batch=int(config["threads"]),
        flash_attn=bool(config["flash_attn"]),
        n_gpu_layers=0,
        verbose=bool(config.get("verbose", True)),
    )
    arch = llm.metadata.get("general.architecture", "")
    metadata = {k.format(arch=arch): llm.metadata.get(k.format(arch=arch)) for k in _META_KEYS}
    ctx = llm.context_params
    info = {
        "llama_cpp_python": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "gguf": config["gguf"],
        "metadata": metadata,
        "pooling_type": int(llm.pooling_type()),
        "n_embd": int(llm.n_embd()),
        "n_ctx": int(llm.n_ctx()),
        "n_batch": int(ctx.n_batch),
        "n_ubatch": int(ctx.n_ubatch),
        "n_seq_max": int(ctx.n_seq_max),
        "threads": int(ctx.n_threads),
        "threads_batch": int(ctx.n_threads_batch),
        "flash_attn_type": int(ctx.flash_attn_type),
        "flash_attn": int(ctx.flash_attn_type) == int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED),
        "pid": os.getpid(),
        "load_seconds_in_runner": round(time.perf_counter() - began, 3),
    }
    return llm, info


def _embed(llm: Any, texts: list[str]) -> tuple[list[list[float]], int]:
    vectors, tokens = llm.embed(texts, normalize=True, truncate=False, return_count=True)
    return vectors, int(tokens)


def handle(llm: Any, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request["cmd"]
    if cmd == "batch":
        texts, size = request["texts"], int(request["batch_size"])
        t0 = time.perf_counter()
        n, dim, tokens = 0, 0, 0
        for i in range(0, len(texts), size):
            vectors, count = _embed(llm, texts[i : i + size])
            n, dim, tokens = n + len(vectors), len(vectors[0]) if vectors else dim, tokens + count
        return {"seconds": time.perf_counter() - t0, "n_vectors": n, "dimension": dim, "tokens": tokens}
    if cmd == "single":
        t0 = time.perf_counter()
        _embed(llm, [request["text"]])
        return {"seconds": time.perf_counter() - t0}
    if cmd == "vectors":
        import array

        vectors, _ = _embed(llm, request["texts"])
        flat = array.array("f", [x for v in vectors for x in v])
        dim = len(vectors[0]) if vectors else 0
        return {"shape": [len(vectors), dim], "float32_b64": base64.b64encode(flat.tobytes()).decode("ascii")}
    if cmd == "tokenize":
        return {
            "ids": [llm.tokenize(t.encode("utf-8"), add_bos=True, special=False) for t in request["texts"]]
        }
    raise ValueError(f"unknown command {cmd!r}")


def main() -> int:
    out = _protocol_stream()
    try:
        llm, info = load(json.loads(sys.argv[1]))
    except BaseException as exc:  # noqa: BLE001 - the bench reports the real error
        out.write(
            json.dumps({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)})
            + "\n"
        )
        return 1
    out.write(json.dumps({"ready": info}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("cmd") == "stop":
            out.write(json.dumps({"ok": {}}) + "\n")
            return 0
        try:
            out.write(json.dumps({"ok": handle(llm, request)}) + "\n")
        except BaseException as exc:  # noqa: BLE001
            out.write(
                json.dumps(
                    {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
                )
                + "\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
