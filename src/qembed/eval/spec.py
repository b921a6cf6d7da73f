"""How an evaluation target is described (``TargetSpec``) and built (``make_target``).

Below both ``qembed.eval.api`` and ``qembed.eval.compare`` (and the zh report), so that
the facade and the comparison engine share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qembed.embedding.protocol import TextEncoder
from qembed.errors import InputError
from qembed.eval.targets import EncoderTarget, HttpTarget, InProcessTarget, Target
from qembed.settings import DEFAULT_BATCH_SIZE, Settings


@dataclass
class TargetSpec:
    """How to reach a target; built only when it is its turn (one model in memory at a time)."""

    model: str | None = None
    endpoint: str | None = None
    api_key: str | None = None
    model_name: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = 4
    dimensions: int | None = None
    settings: Settings | None = None
    name: str | None = None
    prompt_family: str | None = "auto"  # qembed.model.families name, or auto (see Prompting.client_prefix)

    def build(self) -> Target:
        if self.endpoint is not None and self.model is not None:
            raise InputError("give either a model (in process) or an endpoint, not both.", param="endpoint")
        if self.endpoint is not None:
            return HttpTarget(
                self.endpoint,
                api_key=self.api_key,
                model_name=self.model_name,
                batch_size=self.batch_size,
                concurrency=self.concurrency,
                dimensions=self.dimensions,
                name=self.name,
                prompt_family=self.prompt_family,
            )
        settings = self.settings or Settings()
        if self.model is not None:
            settings = settings.overlay(model=self.model)
        return InProcessTarget.load(
            settings,
            batch_size=self.batch_size,
            dimensions=self.dimensions,
            name=self.name,
            prompt_family=self.prompt_family,
        )


def make_target(target: Target | TargetSpec | Any = None, **spec: Any) -> Target:
    """A Target from a ready Target, an Embedder, a TargetSpec, TargetSpec keywords, or any ``TextEncoder``."""
    if target is None:
        return TargetSpec(**spec).build()
    if isinstance(target, TargetSpec):
        return target.build()
    if hasattr(target, "encode") and hasattr(target, "info"):  # an Embedder
        return InProcessTarget(
            target, batch_size=spec.get("batch_size", DEFAULT_BATCH_SIZE), dimensions=spec.get("dimensions")
        )
    if hasattr(target, "embed") and hasattr(target, "identity"):
        return target
    if isinstance(target, TextEncoder):  # anything else that embeds texts (qembed.embedding.protocol)
        return EncoderTarget(
            target, chunk_size=spec.get("batch_size", DEFAULT_BATCH_SIZE), dimensions=spec.get("dimensions")
        )
    raise InputError(f"not a target: {target!r}")
