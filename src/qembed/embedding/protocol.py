"""The one "something that embeds texts" protocol, and its in-process implementation.

Eval, search and bench are clients of an embedder; each of them gets its vectors through
``TextEncoder``, whether the model runs in this process (``InProcessEncoder`` over an
``Embedder``) or behind an OpenAI-compatible server (``qembed.client.HttpEncoder``).
Consumers that need more facts (eval's latency statistics, search's token window) wrap a
``TextEncoder`` in an adapter of their own; they do not define another way to embed.

The option names are those of ``Embedder.encode`` and of the body of qembed's
``POST /v1/embeddings`` (``task``, ``instruction``, ``prompt``, ``dimensions``, ...), so the
same call means the same thing in process and over HTTP. ``role`` is the ``input_type``
("query" or "document"); ``None`` says nothing about it (the engine's default, and no
``input_type`` in an HTTP body).

This module imports only typing, numpy and ``qembed.settings`` (the option vocabularies):
implementing or consuming the protocol never pulls in torch or httpx.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from qembed.settings import InputType

Role = InputType  # which side of a task a text is on


@dataclass(frozen=True)
class Encoded:
    """One encode call: ``[n, dim]`` float32 rows, and the tokens the engine counted (None: not told)."""

    vectors: np.ndarray
    prompt_tokens: int | None = None


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns texts into vectors."""

    @property
    def model_id(self) -> str:
        """The model that makes the vectors (for reports and for refusing to mix models)."""
        ...

    @property
    def dimension(self) -> int | None:
        """Size of the vectors at the model's full width; None when not known before a call (HTTP)."""
        ...

    def identity(self) -> dict[str, Any]:
        """Everything that changes the vectors: two encoders with equal identities give equal vectors."""
        ...

    def encode(self, texts: Sequence[str], *, role: Role | None = None, **options: Any) -> Encoded:
        """``[len(texts), dim]`` float32, one row per text, in order."""
        ...


class InProcessEncoder:
    """A qembed ``Embedder`` in this process, as a ``TextEncoder``.

    Takes the embedder ready-made (duck-typed), so this module stays free of torch.
    ``batch_size`` is the default of every call; a call's own ``batch_size`` wins.
    """

    def __init__(self, embedder: Any, *, batch_size: int = 32) -> None:
        self.embedder = embedder
        self.batch_size = batch_size

    @property
    def model_id(self) -> str:
        return str(self.embedder.info.model_id)

    @property
    def dimension(self) -> int:
        return int(self.embedder.info.dimension)

    def identity(self) -> dict[str, Any]:
        info = self.embedder.info
        return {
            "kind": "in-process",
            "model_id": info.model_id,
            "path": info.path,
            "backend": info.backend,
            "dtype": info.dtype,
        }

    def encode(self, texts: Sequence[str], *, role: Role | None = None, **options: Any) -> Encoded:
        if role is not None:
            options["input_type"] = role
        options.setdefault("batch_size", self.batch_size)
        result = self.embedder.encode_with_usage(list(texts), **options)
        return Encoded(np.asarray(result.vectors, dtype=np.float32), result.prompt_tokens)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Content tokens of each text (no prompt, no special tokens)."""
        return [len(ids) for ids in self.embedder.tokenizer.content_ids(list(texts))] if texts else []
