"""The identity of a set of vectors: which model, weights, prompts and engine made them.

Every artifact that stores vectors (a search index, a corpus job's Parquet output) records
one ``VectorIdentity`` next to them, and whoever adds vectors or queries them later compares
its own identity with the recorded one. Vectors from two identities that differ in what the
model computes are not comparable (every score between them is noise), so that is an error;
the same weights run in another precision or by another backend give vectors that agree to
about 1e-3 cosine (bfloat16 vs float32; an int8 build is gated against float32 at its
``int8_min_cosine``), so that is a warning.

Which field is which:

- **errors** (``INCOMPATIBLE``): ``model_id``, ``revision`` (``qembed.common.fingerprint`` of
  the model folder; two folders that are the same hub commit count as equal), ``dimension``
  (the vectors' output size, after any Matryoshka truncation), ``normalize``, and the two
  prompts (``document_prompt``, ``query_prompt``: the exact text put before each input);
- **warnings** (``ENGINE``): ``dtype``, ``backend``, ``quantization``.

``model`` (the name to load the model again: an alias, hub id or folder) is recorded, never
compared: ``qwen3-0.6b`` and ``Qwen/Qwen3-Embedding-0.6B`` are one model.

This module imports no torch: it reads an ``Embedder`` duck-typed (its ``info``, ``settings``
and ``resolve``), so consumers in any layer above ``embedding`` can use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

IDENTITY_VERSION = 1

# Fields whose difference makes vectors incomparable, and fields that only change the engine.
INCOMPATIBLE = ("model_id", "revision", "dimension", "normalize", "document_prompt", "query_prompt")
ENGINE = ("dtype", "backend", "quantization")

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Difference:
    """One field in which two identities differ; ``severity`` says whether the vectors still mix."""

    field: str
    recorded: Any
    current: Any
    severity: Severity

    def __str__(self) -> str:
        return f"{self.field}: {_show(self.recorded)} recorded, {_show(self.current)} now"


@dataclass(frozen=True)
class VectorIdentity:
    """What made a set of vectors (see the module docstring for what is compared how)."""

    model_id: str
    revision: str  # model_fingerprint of the folder ("" when not known, e.g. over HTTP)
    dimension: int  # output size of the stored vectors
    normalize: bool
    document_prompt: str
    query_prompt: str
    dtype: str
    backend: str
    quantization: str = "none"  # "none", or "int8" plus its recipe
    model: str = ""  # the name to load it again; not compared
    hub_commit: str = ""  # the huggingface_hub commit when the folder is a hub snapshot
    version: int = IDENTITY_VERSION

    @classmethod
    def of(
        cls,
        embedder: Any,
        *,
        task: str | None = "retrieval",
        dimensions: int | None = None,
        model: str | None = None,
        **options: Any,
    ) -> VectorIdentity:
        """The identity of the vectors ``embedder`` makes for documents and queries of ``task``
        (with ``dimensions`` and any other encode ``options``, as the caller will encode them).

        The prompts are resolved exactly as an encode call resolves them, so a caller that
        encodes with other options must pass the same ones here."""
        from qembed.common.fingerprint import model_fingerprint

        info = embedder.info
        common = {
            k: v for k, v in {"task": task, "dimensions": dimensions, **options}.items() if v is not None
        }
        doc = embedder.resolve(input_type="document", **common)
        query = embedder.resolve(input_type="query", **common)
        folder = Path(info.path)
        settings = getattr(embedder, "settings", None)
        return cls(
            model_id=str(info.model_id),
            revision=model_fingerprint(folder) if folder.is_dir() else "",
            dimension=int(doc.dimensions or info.dimension),
            normalize=bool(doc.normalize),
            document_prompt=doc.prefix,
            query_prompt=query.prefix,
            dtype=str(info.dtype),
            backend=str(info.backend),
            quantization=_quantization(info, settings),
            model=model or str(getattr(settings, "model", None) or info.model_id),
            hub_commit=folder.name if folder.parent.name == "snapshots" else "",
        )

    # -- records ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """One line of JSON with sorted keys (what a store's meta table or a Parquet footer keeps)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VectorIdentity:
        """Read a record; keys a later qembed added are ignored, missing optional ones defaulted."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> VectorIdentity:
        return cls.from_dict(json.loads(text))

    # -- comparing -------------------------------------------------------------------------------
    def compare(self, current: VectorIdentity) -> list[Difference]:
        """How ``current`` (the model in use now) differs from this recorded identity: errors first."""
        out: list[Difference] = []
        for name in INCOMPATIBLE:
            a, b = getattr(self, name), getattr(current, name)
            if name == "revision" and (
                not a or not b or (self.hub_commit and self.hub_commit == current.hub_commit)
            ):
                continue  # unknown on one side, or the same published commit in another folder
            if a != b:
                out.append(Difference(name, a, b, "error"))
        for name in ENGINE:
            a, b = getattr(self, name), getattr(current, name)
            if a != b:
                out.append(Difference(name, a, b, "warning"))
        return out

    def label(self) -> str:
        """A short name for messages: model, revision prefix, dimension, engine."""
        rev = f"@{self.revision[:12]}" if self.revision else ""
        return f"{self.model_id}{rev} ({self.dimension} dimensions, {self.backend}/{self.dtype})"


def errors(differences: list[Difference]) -> list[Difference]:
    return [d for d in differences if d.severity == "error"]


def warnings(differences: list[Difference]) -> list[Difference]:
    return [d for d in differences if d.severity == "warning"]


def _quantization(info: Any, settings: Any) -> str:
    quantize = str(getattr(settings, "quantize", None) or "none")
    if quantize == "none":
        return "none"
    recipe = (getattr(info, "quantization", None) or {}).get("recipe")
    if recipe is None:
        return quantize
    return f"{quantize}:{recipe if isinstance(recipe, str) else json.dumps(recipe, sort_keys=True)}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return repr(value)
