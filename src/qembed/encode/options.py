"""The options of an encode call, defined once.

``EncodeOptions`` is the single definition of the nine options that shape a vector. The
Python API validates its keyword arguments with it (``EncodeOptions.of``), every HTTP
request body extends it (``qembed.server.schemas``), and eval passes it through. Each
option is a typed field, so a wrong value (``long_text="drop"``) or an unknown name
(``promt_name``) is refused with one message wherever it comes from.

``resolve`` turns the options into what the engine needs, against the loaded model and
the server's defaults: the exact prompt text, the checked Matryoshka size, normalize and
the long-text policy. ``ResolvedOptions.key`` is what the embedding cache keys on, so
``task="sts"`` and the prompt it stands for share cache entries.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qembed.errors import InputError, describe_validation_errors
from qembed.model.instructions import resolve_prompt
from qembed.model.pipeline import MRL_MIN_DIMENSIONS, PipelineSpec
from qembed.settings import InputType, LongTextPolicy, TruncationSide


class EncodeOptions(BaseModel):
    """What a caller may ask of one encode call (all optional; unset = the model's/server's default)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt_name: str | None = Field(
        None, description="A prompt of the model (e.g. 'query' for Qwen3-Embedding). See GET /info."
    )
    prompt: str | None = Field(
        None, description="A literal text prefix put before every input (instead of a named prompt)."
    )
    instruction: str | None = Field(
        None,
        description="A free task instruction: the text becomes 'Instruct: {instruction}\\nQuery:{text}'.",
    )
    task: str | None = Field(
        None,
        description="A task preset (retrieval, code_retrieval, sts, pair_classification, bitext, classification, clustering).",
    )
    input_type: InputType | None = Field(
        None, description="With `task`: documents of asymmetric tasks get no instruction."
    )
    dimensions: int | None = Field(
        None, description="Matryoshka truncation: keep the first N dimensions (re-normalized)."
    )
    normalize: bool | None = Field(None, description="L2-normalize the vectors (default: as the model does).")
    long_text: LongTextPolicy | None = Field(
        None,
        description="Inputs longer than the window: chunk (mean of windows), truncate, or error. Default: the server's --long-text.",
    )
    truncation_side: TruncationSide | None = Field(
        None, description="Which end `truncate` cuts. Default: the server's --truncation-side."
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="A smaller window for this call (tokens, special tokens included; at least room for them, the prompt "
        "and one content token); at most the server's --max-tokens.",
    )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(EncodeOptions.model_fields)

    @classmethod
    def of(cls, **kwargs: Any) -> EncodeOptions:
        """Validate Python keyword arguments, as strictly as a request body (``dimensions=32.0`` is refused)."""
        unknown = [k for k in kwargs if k not in EncodeOptions.model_fields]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, EncodeOptions.model_fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputError(
                f"Unknown encode option {name!r}.{hint} Options: {', '.join(EncodeOptions.model_fields)}.",
                param=name,
            )
        try:
            return cls.model_validate(kwargs)
        except ValidationError as exc:
            message, param = describe_validation_errors(exc.errors(include_url=False))
            raise InputError(message, param=param) from None

    def given(self) -> dict[str, Any]:
        """The options set (not None): what a client sends on to a server."""
        return {
            name: getattr(self, name)
            for name in EncodeOptions.model_fields
            if getattr(self, name) is not None
        }

    def resolve(self, spec: PipelineSpec, defaults: EncodeDefaults) -> ResolvedOptions:
        """Against the loaded model and the configured defaults; raises ``InputError``."""
        prefix = resolve_prompt(
            spec,
            prompt_name=self.prompt_name,
            prompt=self.prompt,
            instruction=self.instruction,
            task=self.task,
            input_type=self.input_type or "query",
        )
        return ResolvedOptions(
            prefix=prefix,
            dimensions=check_dimensions(self.dimensions, spec, defaults),
            normalize=spec.normalize if self.normalize is None else bool(self.normalize),
            long_text=self.long_text or defaults.long_text,
            truncation_side=self.truncation_side or defaults.truncation_side,
            max_tokens=self.max_tokens,
        )


@dataclass(frozen=True)
class EncodeDefaults:
    """What the process is configured with (Settings): the defaults of unset options."""

    model_id: str
    long_text: LongTextPolicy = "chunk"
    truncation_side: TruncationSide = "right"
    force_dimensions: bool = False


@dataclass(frozen=True)
class ResolvedOptions:
    """The options of one call as the engine applies them."""

    prefix: str  # the exact text put before each input
    dimensions: int | None  # None: the model's full size
    normalize: bool
    long_text: LongTextPolicy
    truncation_side: TruncationSide
    max_tokens: int | None = None  # a smaller window for this call (None: the model's)

    def key(self) -> str:
        """Everything here changes a vector: the embedding cache keys on it."""
        return json.dumps(
            [
                self.prefix,
                self.dimensions,
                self.normalize,
                self.long_text,
                self.truncation_side,
                self.max_tokens,
            ]
        )


def check_dimensions(dimensions: int | None, spec: PipelineSpec, defaults: EncodeDefaults) -> int | None:
    """A Matryoshka size the model supports (None when it is the full size)."""
    if dimensions is None:
        return None
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise InputError(f"dimensions must be an integer, not {dimensions!r}.", param="dimensions")
    hidden = spec.hidden_size
    low = 1 if defaults.force_dimensions else (MRL_MIN_DIMENSIONS if spec.supports_mrl else hidden)
    if not low <= dimensions <= hidden:
        why = ""
        if not (spec.supports_mrl or defaults.force_dimensions):
            why = (
                f" ({defaults.model_id} was not trained for Matryoshka truncation; start qembed with "
                "--force-dimensions to truncate anyway)"
            )
        raise InputError(
            f"dimensions must be between {low} and {hidden} for {defaults.model_id}, not {dimensions}{why}.",
            param="dimensions",
        )
    return None if dimensions == hidden else dimensions
