"""What ``dtype=auto`` resolves to, and that bfloat16 on CPU gives sound vectors.

``auto`` is a speed decision with a precision cost: bf16 only where the CPU computes it
natively and the checkpoint itself is bf16 (Qwen3); float32 elsewhere (MiniLM, CPUs that
would emulate bf16). The rest of the suite pins float32 (tests/conftest.py) for its parity
bounds; these tests pass ``dtype`` explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qembed import Embedder
from qembed.model.backends import hardware, torch_backend
from qembed.model.backends.torch_backend import checkpoint_dtype, pick_dtype


@pytest.mark.parametrize(
    ("device", "published", "native", "expected"),
    [
        ("cuda", "float32", False, "bfloat16"),
        ("cuda:1", None, True, "bfloat16"),
        ("cpu", "bfloat16", True, "bfloat16"),
        ("cpu", "bfloat16", False, "float32"),  # emulated bf16 is several times slower
        ("cpu", "float32", True, "float32"),  # a float32 checkpoint keeps its precision
        ("cpu", "float16", True, "float32"),
        ("cpu", None, True, "float32"),
    ],
)
def test_auto_dtype_rule(
    monkeypatch: pytest.MonkeyPatch, device: str, published: str | None, native: bool, expected: str
) -> None:
    monkeypatch.setattr(torch_backend, "native_bf16", lambda: native)
    assert pick_dtype("auto", device, published) == expected


@pytest.mark.parametrize("explicit", ["float32", "bfloat16", "float16"])
def test_an_explicit_dtype_is_kept(monkeypatch: pytest.MonkeyPatch, explicit: str) -> None:
    monkeypatch.setattr(torch_backend, "native_bf16", lambda: True)
    assert pick_dtype(explicit, "cpu", "bfloat16") == explicit


def test_checkpoint_dtype_reads_either_config_key(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert checkpoint_dtype(tmp_path) == "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert checkpoint_dtype(tmp_path) == "float32"
    (tmp_path / "config.json").write_text("{}")
    assert checkpoint_dtype(tmp_path) is None
    assert checkpoint_dtype(tmp_path / "missing") is None


def test_native_bf16_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert hardware.native_bf16()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not hardware.native_bf16()


def test_auto_on_this_machine(tiny_model_dir: Path, minilm_dir: Path) -> None:
    qwen3 = Embedder(str(tiny_model_dir), device="cpu", dtype="auto")
    assert checkpoint_dtype(tiny_model_dir) == "bfloat16"
    assert qwen3.info.dtype == ("bfloat16" if hardware.native_bf16() else "float32")
    minilm = Embedder("minilm", device="cpu", dtype="auto")
    assert minilm.info.dtype == "float32"


@pytest.fixture(scope="module")
def bf16_pair(tiny_model_dir: Path) -> tuple[Embedder, Embedder]:
    return Embedder(str(tiny_model_dir), device="cpu", dtype="bfloat16"), Embedder(
        str(tiny_model_dir), device="cpu", dtype="float32"
    )


TEXTS = [
    "hello world",
    "What is the capital of China?",
    "一段中文文本，用于测试。",
    "def add(a, b):\n    return a + b\n" * 4,
]


def test_cpu_bfloat16_vectors_are_unit_norm_and_close_to_float32(
    bf16_pair: tuple[Embedder, Embedder],
) -> None:
    bf16, fp32 = bf16_pair
    assert bf16.info.dtype == "bfloat16"
    a, b = bf16.encode(TEXTS), fp32.encode(TEXTS)
    assert a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(1)
    assert cos.min() >= 0.999, cos


def test_cpu_bfloat16_alone_and_in_a_padded_batch_agree(bf16_pair: tuple[Embedder, Embedder]) -> None:
    """Left padding must not leak into a row in bf16 either (bf16 rounding differs by
    batch shape, so the bound is bf16's, not float32's)."""
    bf16, _ = bf16_pair
    batch = bf16.encode(TEXTS, batch_size=len(TEXTS))
    alone = np.stack([bf16.encode([t])[0] for t in TEXTS])
    cos = (batch * alone).sum(1)
    assert cos.min() >= 0.999, cos
