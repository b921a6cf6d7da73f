"""Model identity in every vector artifact: the record (``qembed.embedding.identity``), an
index refusing a different model with both named, warnings for precision/backend changes,
old indexes upgraded on their next write, and ``qembed index --reembed``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qembed.embedding.identity import VectorIdentity

BASE = VectorIdentity(
    model_id="Org/Model-A", revision="a" * 64, dimension=64, normalize=True, document_prompt="",
    query_prompt="Instruct: x\nQuery:", dtype="float32", backend="torch", model="model-a",
)  # fmt: skip


def test_identity_round_trips_and_ignores_keys_a_later_version_adds() -> None:
    data = {**BASE.to_dict(), "added_later": 1}
    assert VectorIdentity.from_dict(data) == BASE
    assert VectorIdentity.from_json(BASE.to_json()) == BASE


@pytest.mark.parametrize(
    ("change", "severity"),
    [
        ({"model_id": "Org/Model-B"}, "error"),
        ({"revision": "b" * 64}, "error"),
        ({"dimension": 32}, "error"),
        ({"normalize": False}, "error"),
        ({"document_prompt": "passage: "}, "error"),
        ({"query_prompt": "query: "}, "error"),
        ({"dtype": "bfloat16"}, "warning"),
        ({"backend": "onnx"}, "warning"),
        ({"quantization": "int8:w8a8"}, "warning"),
    ],
)
def test_each_field_differs_with_its_severity(change: dict, severity: str) -> None:
    (diff,) = BASE.compare(replace(BASE, **change))
    (field,) = change
    assert (diff.field, diff.severity) == (field, severity)
    assert diff.recorded == getattr(BASE, field) and diff.current == change[field]


def test_the_name_used_to_load_is_not_compared_and_a_shared_hub_commit_is_one_revision() -> None:
    assert BASE.compare(replace(BASE, model="Org/Model-A")) == []
    a = replace(BASE, hub_commit="c0ffee", revision="1" * 64)
    assert a.compare(replace(a, revision="2" * 64)) == []  # same commit, re-downloaded elsewhere
    assert [d.field for d in a.compare(replace(a, hub_commit="beef", revision="2" * 64))] == ["revision"]
    assert BASE.compare(replace(BASE, revision="")) == []  # unknown (an HTTP encoder): not a difference


def test_identity_of_an_embedder_records_prompts_revision_dimensions(tiny_embedder) -> None:
    from qembed.common.fingerprint import model_fingerprint

    ident = VectorIdentity.of(tiny_embedder)
    info = tiny_embedder.info
    assert ident.model_id == info.model_id and ident.dimension == info.dimension
    assert ident.revision == model_fingerprint(Path(info.path))
    assert ident.query_prompt == tiny_embedder.resolve(task="retrieval", input_type="query").prefix
    assert ident.query_prompt.startswith("Instruct:") and ident.document_prompt == ""
    assert (ident.dtype, ident.backend, ident.quantization) == (info.dtype, info.backend, "none")
    small = VectorIdentity.of(tiny_embedder, dimensions=info.min_dimensions)
    assert [d.field for d in ident.compare(small)] == ["dimension"]


def test_same_weights_in_bfloat16_agree_with_float32_within_1e3_cosine(tiny_model_dir: Path) -> None:
    """The measurement behind 'a dtype change is a warning, not an error'."""
    from qembed import Embedder

    texts = ["hello world", "the pod stays pending: not enough cpu", "zwei drei vier", "a b c d e f g"]
    full = Embedder(str(tiny_model_dir), device="cpu", dtype="float32")
    half = Embedder(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    diffs = VectorIdentity.of(full).compare(VectorIdentity.of(half))
    assert [(d.field, d.severity) for d in diffs] == [("dtype", "warning")]
    cos = (np.asarray(full.encode(texts)) * np.asarray(half.encode(texts))).sum(axis=1)
    assert cos.min() > 1 - 1e-3
