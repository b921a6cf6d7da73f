"""The engines a throughput bench compares, each in a worker process of its own.

One worker per engine, so that each engine's peak memory is its own (read from the OS,
see ``qembed.bench.procs``) and engines cannot share warmed caches or thread pools.
The coordinator drives all workers from one process in alternating rounds, so machine
noise (other jobs, thermal limits) falls on every engine alike; an idle worker blocks on
its pipe and costs nothing.

Every runner but llama.cpp's embeds through the one ``TextEncoder`` protocol
(``qembed.embedding.protocol``): ``_EncoderRunner`` times batches, single texts and vector
checks over any encoder, and the kinds differ only in the encoder they build.

Kinds:

- ``qembed``: ``Embedder(settings=...)`` in process (``InProcessEncoder``). The engine is
  described by Settings fields only (backend, quantize, dtype, threads, ...), so a new
  backend shows up here by its settings, with no change to this module.
- ``st``: sentence-transformers ``SentenceTransformer(folder).encode``, the baseline.
- ``http``: an OpenAI-compatible server (qembed serve, a peer, any endpoint), driven by
  the shared client (``qembed.client``) in the worker with several requests in flight.
- ``llamacpp``: a GGUF in llama-cpp-python, in a runner process of the peer venv that the
  worker drives over a pipe (``qembed.bench.peer_llamacpp``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from qembed.bench.spec import EngineKind, EngineRole, EngineSpec
from qembed.errors import EngineFailed

__all__ = [
    "EngineFailed",
    "EngineKind",
    "EngineProcess",
    "EngineRole",
    "EngineSpec",
]  # EngineSpec: qembed.bench.spec


# -- runners (inside the worker) -----------------------------------------------------------
class _EncoderRunner:
    """Batches, single texts and vectors through ``self.encoder`` (a ``TextEncoder``)."""

    encoder: Any

    def batch(self, texts: list[str], batch_size: int) -> tuple[int | None, int, int]:
        encoded = self.encoder.encode(texts, role="document", batch_size=batch_size)
        return encoded.prompt_tokens, int(encoded.vectors.shape[0]), int(encoded.vectors.shape[1])

    def single(self, text: str) -> None:
        self.encoder.encode([text], role="query")

    def vectors(self, texts: list[str]) -> Any:
        return self.encoder.encode(texts, role="document").vectors


class _QembedRunner(_EncoderRunner):
    def __init__(self, spec: EngineSpec) -> None:
        from qembed.embedding.embedder import Embedder
        from qembed.embedding.protocol import InProcessEncoder
        from qembed.settings import Settings

        self.embedder = Embedder(settings=Settings.model_validate(spec.settings))
        self.encoder = InProcessEncoder(self.embedder)

    def info(self) -> dict[str, Any]:
        import torch

        i = self.embedder.info
        info = {
            "backend": i.backend,
            "device": i.device,
            "dtype": i.dtype,
            "threads": torch.get_num_threads(),
            "dimension": i.dimension,
        }
        if i.quantization:  # int8: the recipe and the quality gate's measurement, into the report
            info["quantization"] = i.quantization
        return info


class _SentenceTransformerEncoder:
    """A ``SentenceTransformer`` as a ``TextEncoder``: the baseline embeds the raw texts (no
    prompt on either side, whatever ``role`` says), as sentence-transformers does by default."""

    def __init__(self, model: Any, model_path: str) -> None:
        self.model = model
        self.model_path = model_path

    @property
    def model_id(self) -> str:
        return self.model_path

    @property
    def dimension(self) -> int:
        return int(
            getattr(self.model, "get_embedding_dimension", self.model.get_sentence_embedding_dimension)() or 0
        )

    def identity(self) -> dict[str, Any]:
        return {"kind": "sentence-transformers", "path": self.model_path}

    def encode(self, texts: Any, *, role: str | None = None, batch_size: int = 32, **_: Any) -> Any:
        from qembed.embedding.protocol import Encoded

        vectors = self.model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return Encoded(vectors, None)


class _STRunner(_EncoderRunner):
    def __init__(self, spec: EngineSpec) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if spec.device == "cpu":
            from qembed.model.backends.hardware import available_cores

            torch.set_num_threads(spec.threads or available_cores())
        kwargs: dict[str, Any] = {}
        if spec.dtype:
            import transformers

            key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
            kwargs["model_kwargs"] = {key: getattr(torch, spec.dtype)}
        self.model = SentenceTransformer(spec.model_path, device=spec.device, **kwargs)
        self.encoder = _SentenceTransformerEncoder(self.model, spec.model_path)

    def info(self) -> dict[str, Any]:
        import sentence_transformers
        import torch

        param = next(self.model.parameters())
        return {
            "backend": f"sentence-transformers {sentence_transformers.__version__}",
            "device": str(param.device),
            "dtype": str(param.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "dimension": self.encoder.dimension,
        }


class _HttpRunner(_EncoderRunner):
    """Batches go out ``concurrency`` requests at a time and are judged request by request
    (``OpenAIClient.attempt_async``: status, latency, the server's token count)."""

    def __init__(self, spec: EngineSpec) -> None:
        from qembed.client.openai import HttpEncoder, OpenAIClient

        self.spec = spec
        self.client = OpenAIClient(
            spec.url or "", model=spec.http_model, api_key=spec.api_key, timeout=3600.0
        )
        self.client.resolve_model()
        self.encoder = HttpEncoder(self.client)

    def info(self) -> dict[str, Any]:
        return {
            "backend": "http",
            "url": self.client.url,
            "model": self.client.model,
            "concurrency": self.spec.concurrency,
        }

    def batch(self, texts: list[str], batch_size: int) -> tuple[int | None, int, int]:
        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        outcomes = asyncio.run(self._all(chunks))
        bad = [o for o in outcomes if not o.ok]
        if bad:
            raise EngineFailed(
                f"{len(bad)} of {len(outcomes)} requests failed; first: status {bad[0].status}: {bad[0].error}"
            )
        counted = [o.prompt_tokens for o in outcomes]
        tokens = None if any(t is None for t in counted) else sum(t for t in counted if t is not None)
        return tokens, sum(o.n_vectors for o in outcomes), outcomes[0].dimension

    async def _all(self, chunks: list[list[str]]) -> list[Any]:
        results: list[Any] = [None] * len(chunks)
        next_index = 0

        async def client_loop(http: Any) -> None:
            nonlocal next_index
            while next_index < len(chunks):
                i = next_index
                next_index += 1
                results[i] = await self.client.attempt_async(http, chunks[i])

        async with self.client.async_http(self.spec.concurrency) as http:
            await asyncio.gather(*(client_loop(http) for _ in range(min(self.spec.concurrency, len(chunks)))))
        return results

    def vectors(self, texts: list[str]) -> Any:
        return self.client.embed(texts).vectors  # one request, raw texts: what the other engines embed

    def single(self, text: str) -> None:
        outcome = self.client.attempt([text])
        if not outcome.ok:
            raise EngineFailed(f"status {outcome.status}: {outcome.error}")


def _llamacpp_runner(spec: EngineSpec) -> Any:
    from qembed.bench.peer_llamacpp import LlamaCppRunner  # drives a runner script in the peer venv

    return LlamaCppRunner(spec)


_RUNNERS = {"qembed": _QembedRunner, "st": _STRunner, "http": _HttpRunner, "llamacpp": _llamacpp_runner}


def _worker_main(spec: EngineSpec, conn: Connection) -> None:
    """Load the engine, then answer commands until told to stop. Timing happens here,
    next to the engine, so that pipe transfer of texts is not counted."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    began = time.perf_counter()
    try:
        runner = _RUNNERS[spec.kind](spec)
        info = runner.info()
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the coordinator
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=5)))
        return
    info["load_seconds"] = round(time.perf_counter() - began, 3)
    conn.send(("ready", info))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        command = message[0]
        if command == "stop":
            conn.send(("stopped", _stats()))
            return
        try:
            if command == "batch":
                _, texts, batch_size = message
                t0 = time.perf_counter()
                tokens, n, dim = runner.batch(texts, batch_size)
                conn.send(
                    (
                        "ok",
                        {
                            "seconds": time.perf_counter() - t0,
                            "tokens_counted": tokens,
                            "n_vectors": n,
                            "dimension": dim,
                        },
                    )
                )
            elif command == "latency":
                _, texts = message
                latencies = []
                for text in texts:
                    t0 = time.perf_counter()
                    runner.single(text)
                    latencies.append(time.perf_counter() - t0)
                conn.send(("ok", {"latencies": latencies}))
            elif command == "vectors":
                import numpy as np

                conn.send(("ok", {"vectors": np.asarray(runner.vectors(message[1]), dtype=np.float32)}))
            elif command == "stats":
                conn.send(("ok", _stats()))
            else:
                conn.send(("error", f"unknown command {command!r}", ""))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=5)))


def _stats() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import sys

        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except Exception:
        pass
    return out


class EngineProcess:
    """The coordinator's handle on one worker."""

    def __init__(self, spec: EngineSpec, *, call_timeout: float = 3600.0) -> None:
        self.spec = spec
        self.call_timeout = call_timeout
        self.info: dict[str, Any] = {}
        self.error: str | None = None
        self.stats: dict[str, Any] = {}
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(spec, child), name=f"qembed-bench-{spec.name}", daemon=True
        )
        self._child = child

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def launch(self) -> EngineProcess:
        """Start the worker; it loads its engine while we do other things."""
        self.process.start()
        self._child.close()
        return self

    def wait_ready(self, timeout: float) -> EngineProcess:
        reply = self._receive(timeout)
        if reply[0] != "ready":
            self.error = reply[1]
            self.close()
            raise EngineFailed(reply[1])
        self.info = reply[1]
        return self

    def start(self, timeout: float) -> EngineProcess:
        return self.launch().wait_ready(timeout)

    def _receive(self, timeout: float) -> tuple[Any, ...]:
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.5):
            if not self.process.is_alive():
                raise EngineFailed(f"worker {self.spec.name} died (exit code {self.process.exitcode})")
            if time.monotonic() > deadline:
                raise EngineFailed(f"worker {self.spec.name} did not answer within {timeout:.0f} s")
        try:
            return self._conn.recv()
        except EOFError as exc:
            raise EngineFailed(
                f"worker {self.spec.name} closed its pipe (exit code {self.process.exitcode})"
            ) from exc

    def call(self, *message: Any) -> dict[str, Any]:
        self._conn.send(message)
        reply = self._receive(self.call_timeout)
        if reply[0] != "ok":
            raise EngineFailed(reply[1])
        return reply[1]

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self._conn.send(("stop",))
                reply = self._receive(30.0)
                if reply[0] == "stopped":
                    self.stats = reply[1]
            except (EngineFailed, OSError, BrokenPipeError):
                pass
            self.process.join(timeout=30.0)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(timeout=10.0)
        self._conn.close()
