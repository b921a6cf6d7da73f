"""One typed settings object for every part of qembed, grouped by concern.

Each field is a CLI flag (``--max-batch-tokens``), an environment variable
(``QEMBED_MAX_BATCH_TOKENS``) and an attribute (``settings.max_batch_tokens``), with one
default and one description, so the three can never drift apart. The fields are grouped
into one model per concern (``ModelSettings``, ``EncodeSettings``, ``CacheSettings``,
``SearchSettings``, ``ServingSettings``, ``ServerSettings``); ``Settings`` is all of them
at once, still flat: every env var is ``QEMBED_<FIELD>`` and every attribute
``settings.<field>``. A command asks for the flags of the groups it uses
(``Settings.fields_of(ModelSettings, EncodeSettings)``), never for a hand-kept list.

The CLI builds a ``Settings`` from its flags on top of the environment; library users
build one directly or pass keyword arguments. Either way changes go through
``Settings.overlay``, which validates them and refuses unknown names.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from qembed.errors import InputError

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-0.6B"
# Texts per encode call (library, eval, bench, indexing): one default for all of them.
DEFAULT_BATCH_SIZE = 32

# The vocabulary of the encode options, shared by the process defaults here and the per-call
# options (qembed.encode.options.EncodeOptions): one definition of each.
InputType = Literal["query", "document"]
LongTextPolicy = Literal["chunk", "truncate", "error"]
TruncationSide = Literal["right", "left"]
Source = Literal["auto", "huggingface", "modelscope", "local"]


def _split_commas(value: object) -> object:
    """``"a, b"`` (an env var) -> ``["a", "b"]``; lists pass through."""
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return value


def _path_str(value: object) -> object:
    """A ``pathlib.Path`` given for a folder setting is its string (``Embedder(Path(...))``)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class _Group(BaseModel):
    model_config = ConfigDict(validate_default=True)

    @field_validator("model", "export_dir", "cache_dir", "data_dir", mode="before", check_fields=False)
    @classmethod
    def _paths(cls, value: object) -> object:
        return _path_str(value)


class ModelSettings(_Group):
    """Which model, loaded how and where (every command that loads a model takes these)."""

    model: str | None = Field(
        None,
        description="Hub id, alias (qwen3-0.6b, qwen3-4b, qwen3-8b, minilm) or local folder. "
        "Unset: Qwen/Qwen3-Embedding-0.6B, falling back to minilm (with a warning) when it cannot be had.",
    )
    source: Source = Field(
        "auto", description="Where hub ids come from: auto (HF, then ModelScope), huggingface, modelscope."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    backend: str = Field(
        "torch",
        description="Inference backend: torch, onnx, openvino, or auto (the fastest measured one installed for the device; "
        "see docs/PERFORMANCE.md).",
    )
    quantize: Literal["none", "int8"] = Field(
        "none", description="Weight quantization for backends that support it."
    )
    int8_min_cosine: float = Field(
        0.99,
        ge=-1.0,
        le=1.0,
        description="int8 quality gate: the worst cosine to float32 on the shipped calibration set that an int8 build may "
        "have; below it qembed refuses to serve (measured once per export, shown in /info). -1 accepts any build.",
    )
    int8_smoothquant: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["auto"] | None = Field(
        None,
        description="SmoothQuant migration strength (alpha) of int8 builds of decoder models; unset: the measured default "
        "(0.5; openvino 0.2), auto: searched per model on the calibration set, 0: off.",
    )
    int8_activations: Literal["auto", "per-token-group", "per-token", "per-tensor"] = Field(
        "auto",
        description="How the onnx backend quantizes activations: per-token-group (one scale per token and block of "
        "128 channels, MatMulNBits; the most accurate with outlier channels), per-token (one scale per token), "
        "per-tensor (ONNX Runtime's fused dynamic quantization, one scale per batch; fastest) or auto (per-tensor "
        "when it passes the int8 gate on this model, else per-token-group).",
    )
    int8_keep: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Linear layers (module-path substrings, comma-separated, e.g. mlp.down_proj) int8 builds keep in "
        "float; unset: the backend's measured default.",
    )
    export_dir: str | None = Field(
        None,
        description="Where ONNX/OpenVINO exports are cached (default: next to the model when writable, else ~/.cache/qembed).",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto = bfloat16 on CUDA; on CPU bfloat16 for bf16 checkpoints (Qwen3) where the CPU has native bf16 "
        "(AVX512-BF16/AMX), else float32. Pin float32 for bit-level parity with a float32 reference.",
    )
    threads: int | None = Field(
        None, ge=1, description="Torch intra-op threads (default: cores available to the process)."
    )

    @field_validator("int8_keep", mode="before")
    @classmethod
    def _split_keep(cls, value: object) -> object:
        return _split_commas(value)


class EncodeSettings(_Group):
    """How inputs become model windows (every command that loads a model takes these)."""

    max_tokens: int | None = Field(
        None,
        ge=8,
        description="Window limit in tokens per input (default: 8192 for Qwen3, the model's max otherwise).",
    )
    long_text: LongTextPolicy = Field(
        "chunk", description="Inputs longer than the window: chunk, truncate or error."
    )
    truncation_side: TruncationSide = Field("right", description="Which end `truncate` cuts.")
    chunk_overlap: int | None = Field(
        None, ge=0, description="Overlap between windows in tokens (default: window/8)."
    )
    force_dimensions: bool = Field(
        False, description="Allow `dimensions` below the model size for models without Matryoshka training."
    )
    allow_foreign_token_ids: bool = Field(
        False,
        description="Embed token-id inputs that this model's tokenizer would not produce (decoding and re-encoding "
        "them gives other ids), e.g. tiktoken ids from LangChain's OpenAIEmbeddings; off: such input is a 400.",
    )


class RerankSettings(_Group):
    """The reranker served beside the embedder (``/v1/rerank``) and used by ``search --rerank``."""

    rerank_model: str | None = Field(
        None,
        description="Reranker to load beside the embedder: a Qwen3-Reranker (hub id or folder) or a sentence-transformers "
        "cross-encoder. Unset: no reranker (`/v1/rerank` answers 404 saying how to start one).",
    )
    rerank_max_length: int | None = Field(
        None,
        ge=16,
        description="Tokens of one (query, document) pair, prompt included (default: the model's own limit, 8192 for "
        "Qwen3-Reranker); longer documents are truncated or refused per --long-text.",
    )
    rerank_instruction: str | None = Field(
        None,
        description="Qwen3-Reranker instruction when a request gives none (default: the model card's web-search one).",
    )


class CacheSettings(_Group):
    """The optional embedding cache of the engine."""

    cache_size: int = Field(0, ge=0, description="Entries in the in-memory LRU embedding cache (0: off).")
    cache_dir: str | None = Field(None, description="Folder of the optional on-disk embedding cache.")


class SearchSettings(_Group):
    """The search store (``qembed index``, ``qembed search``, ``qembed serve --index``)."""

    data_dir: str = Field("qembed-data", description="Folder of the embedded search store.")
    index: str | None = Field(
        None, description="Search index served by `qembed serve` (POST /v1/search, /v1/index)."
    )
    store_uri: str | None = Field(
        None, description="Milvus URI (http://host:19530) instead of the embedded store."
    )
    ann: Literal["auto", "on", "off"] = Field(
        "off",
        description="Dense search of the embedded store through an HNSW graph (usearch, the `ann` extra): "
        "off (default) always exact, auto from `ann_threshold` chunks, on always. Off by default because its "
        "recall past 50k chunks is measured only on random vectors (0.74 at 100k x 1024, ef 1024): opt in and check "
        "recall on your own index (docs/SEARCH.md).",
    )
    ann_threshold: int = Field(
        50_000, ge=0, description="Live chunks from which `ann=auto` uses the graph (below: exact scan)."
    )
    ann_ef: int = Field(
        1024,
        ge=16,
        description="Search width of the graph: higher finds more of the exact top k, slower "
        "(random 1024-d vectors: recall@10 0.90 at 1024, 0.99 at 2048 on 50k; real text, 180k x 1024: "
        "1.0 at 256 in 3.6 ms, 7.6 ms at 1024).",
    )


class ServingSettings(_Group):
    """The model worker and its queue: batching and back-pressure (serve, bench)."""

    max_batch_tokens: int | None = Field(
        None,
        ge=16,
        description="Token budget of one model batch (padded tokens). Default: 16384 on CUDA, 8192 on CPU.",
    )
    max_batch_size: int = Field(256, ge=1, description="Cap on inputs (windows) per model batch.")
    max_client_batch_size: int = Field(
        2048, ge=1, description="Most inputs one request may carry (more: 413)."
    )
    payload_limit: int = Field(8_000_000, ge=1024, description="Largest request body in bytes (more: 413).")
    max_queued_tokens: int = Field(2_000_000, ge=1, description="Tokens waiting in the queue before 429.")
    max_concurrent_requests: int = Field(512, ge=1, description="Requests in flight before 429.")
    max_request_tokens: int = Field(
        1_048_576,
        ge=1,
        description="Most tokens of model work one request may ask for (windows, prompts and special tokens included; "
        "default 2048 inputs of 512 tokens); more: 413.",
    )
    warmup: bool = Field(True, description="Run a warm-up pass before /ready answers 200.")


class ServerSettings(_Group):
    """The HTTP process: where it listens, who may call it, how it stops."""

    host: str = Field("127.0.0.1", description="Bind address (0.0.0.0 to listen on every interface).")
    port: int = Field(
        30000, ge=0, le=65535, description="Port (30000: sglang's default, so its clients work as-is)."
    )
    served_model_name: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra names the server accepts in `model` (repeatable; comma-separated in the env var); the "
        "first is the name responses and /v1/models give.",
    )
    api_key: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted Bearer tokens (comma-separated in the env var). Empty: no auth.",
    )
    cors_allow_origin: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (off when empty)."
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds to finish accepted requests after SIGTERM."
    )
    timeout_keep_alive: float = Field(
        5.0,
        gt=0,
        description="Seconds an idle keep-alive connection stays open between requests (a proxy's upstream keepalive_timeout must be shorter).",
    )
    request_read_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a new connection has to send its request headers, and most seconds a request body may pause "
        "between two reads; then the connection is closed (a stalled body is logged as 408).",
    )
    max_connections: int = Field(
        1024, ge=1, description="Open connections (idle ones too) before new ones get 503 and are closed."
    )
    log_level: str = Field("info", description="debug, info, warning, error.")

    @field_validator("api_key", "cors_allow_origin", "served_model_name", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return _split_commas(value)


GROUPS: tuple[type[BaseModel], ...] = (
    ModelSettings,
    EncodeSettings,
    RerankSettings,
    CacheSettings,
    SearchSettings,
    ServingSettings,
    ServerSettings,
)


def _unknown(name: str, known: Iterable[str]) -> InputError:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else " (see `qembed serve --help` for the settings)."
    return InputError(f"unknown setting {name!r}{hint}", param=name)


def settings_error(exc: ValidationError) -> InputError:
    """One line per bad field: ``long_text='bogus': Input should be 'chunk', 'truncate' or 'error'``."""
    parts, param = [], None
    for error in exc.errors():
        loc = ".".join(str(x) for x in error["loc"])
        param = param or (str(error["loc"][0]) if error["loc"] else None)
        parts.append(f"{loc}={error.get('input')!r}: {error['msg']}")
    return InputError("invalid setting " + "; ".join(parts), param=param)


# Base classes in reverse: pydantic orders fields from the last base to the first, and
# this order (model, encode, cache, search, serving, server) is the README table's.
class Settings(
    ServerSettings,
    ServingSettings,
    SearchSettings,
    CacheSettings,
    RerankSettings,
    EncodeSettings,
    ModelSettings,
    BaseSettings,
):
    """Everything that configures a qembed process (engine, server, limits)."""

    model_config = SettingsConfigDict(env_prefix="QEMBED_", extra="ignore", validate_default=True)

    @classmethod
    def fields_of(cls, *groups: type[BaseModel], exclude: Iterable[str] = ()) -> list[str]:
        """The field names of ``groups``, in Settings order, less ``exclude`` (flags a command spells otherwise)."""
        excluded = set(exclude)
        unknown = excluded.difference(cls.model_fields)
        if unknown:
            raise ValueError(f"not Settings fields: {sorted(unknown)}")
        wanted = {name for group in groups for name in group.model_fields}
        return [name for name in cls.model_fields if name in wanted and name not in excluded]

    @classmethod
    def group_of(cls, name: str) -> type[BaseModel]:
        """The concern group a field belongs to."""
        for group in GROUPS:
            if name in group.model_fields:
                return group
        raise _unknown(name, cls.model_fields)

    def overlay(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated like the environment is.

        Unknown names and bad values raise ``InputError`` naming the field (and, for a
        misspelt name, the closest valid one), before anything uses the settings.
        """
        if not changes:
            return self
        for name in changes:
            if name not in type(self).model_fields:
                raise _unknown(name, type(self).model_fields)
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise settings_error(exc) from exc

    def masked(self) -> dict[str, object]:
        """The effective settings with secrets hidden, for the start-up log line."""
        data = self.model_dump()
        data["api_key"] = [
            f"***{k.get_secret_value()[-2:]}" if len(k.get_secret_value()) > 6 else "***"
            for k in self.api_key
        ]
        return data
