"""Every backend gives the vectors of torch float32 within its documented tolerance, and the
export cache is keyed, atomic and reused. Backends whose packages are not installed are
skipped with the reason.

Tolerances (per vector cosine to torch float32, docs/PERFORMANCE.md): float32 backends
>= 0.9999; int8 backends (onnx, openvino, torch) >= 0.99 on MiniLM, the quality gate
(tests/model/backends/test_int8.py tests the gate itself on the outlier fixture).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from qembed.common.fingerprint import model_fingerprint
from qembed.errors import InputError
from qembed.model.backends import AUTO_CPU, BACKENDS, artifacts, missing_packages, resolve_backend

TEXTS = [
    "A man is playing a guitar.",
    "Two dogs run across a snowy field while their owner watches from the porch.",
    "Stocks fell sharply on Monday after the central bank raised interest rates again.",
    "How do I reset my password?",
    "The quick brown fox.",
    "Quantum computers use qubits, which can be in a superposition of states, to solve some problems faster.",
]
FLOAT32_MIN_COS = 0.9999
INT8_MIN_COS = 0.99


def _need(backend: str) -> None:
    missing = missing_packages(backend)
    if missing:
        pytest.skip(
            f"the {backend} backend needs {', '.join(missing)} (pip install 'qembed-server[{backend}]')"
        )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One export cache for the session: each model/backend is exported once."""
    return str(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
def reference(tiny_embedder, minilm_embedder) -> dict[str, np.ndarray]:
    return {"tiny": tiny_embedder.encode(TEXTS), "minilm": minilm_embedder.encode(TEXTS)}


def _embedder(model: str, tiny_model_dir: Path, export_dir: str, **settings):
    from qembed import Embedder

    return Embedder(str(tiny_model_dir) if model == "tiny" else "minilm", export_dir=export_dir, **settings)


@pytest.mark.parametrize("model", ["tiny", "minilm"])
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_float32_backends_match_torch(
    backend: str, model: str, tiny_model_dir: Path, export_dir: str, reference
) -> None:
    _need(backend)
    embedder = _embedder(model, tiny_model_dir, export_dir, backend=backend)
    assert (embedder.info.backend, embedder.info.dtype) == (backend, "float32")
    got = embedder.encode(TEXTS)
    assert got.shape == reference[model].shape
    assert _cosines(got, reference[model]).min() >= FLOAT32_MIN_COS


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_backends_within_gate_on_minilm(
    backend: str, tiny_model_dir: Path, export_dir: str, reference
) -> None:
    _need(backend)
    embedder = _embedder("minilm", tiny_model_dir, export_dir, backend=backend, quantize="int8")
    assert embedder.info.dtype == "int8"
    cos = _cosines(embedder.encode(TEXTS), reference["minilm"])
    assert cos.min() >= INT8_MIN_COS
    assert cos.mean() < 0.999999  # really quantized, not float32 under another name


def test_int8_onnx_runs_the_tiny_qwen3_shape(tiny_model_dir: Path, export_dir: str, reference) -> None:
    """Left padding + last-token pooling through the quantized graph (random weights: sanity only)."""
    _need("onnx")
    embedder = _embedder("tiny", tiny_model_dir, export_dir, backend="onnx", quantize="int8")
    assert _cosines(embedder.encode(TEXTS), reference["tiny"]).min() >= 0.95


def test_torch_int8_within_the_gate(minilm_dir: Path, export_dir: str, reference) -> None:
    """Per-token int8 activations (torch._int_mm) + SmoothQuant: MiniLM within the int8 gate
    (the torch.ao per-tensor recipe it replaces missed it: min cosine 0.95)."""
    from qembed import Embedder

    embedder = Embedder("minilm", quantize="int8", export_dir=export_dir)
    assert embedder.info.dtype == "int8"
    assert embedder.info.quantization["gate"]["min_cosine"] >= 0.99  # the gate's own measurement
    cos = _cosines(embedder.encode(TEXTS), reference["minilm"])
    assert cos.min() >= INT8_MIN_COS
    assert cos.mean() < 0.999999  # really quantized


def test_openvino_int8_vectors_do_not_depend_on_batch_mates(tiny_model_dir: Path, export_dir: str) -> None:
    """Per-token activation scales: a text's vector is the same alone or in a padded batch."""
    _need("openvino")
    embedder = _embedder("minilm", tiny_model_dir, export_dir, backend="openvino", quantize="int8")
    alone = embedder.encode(TEXTS[:1])
    together = embedder.encode(TEXTS)[:1]
    assert _cosines(alone, together)[0] >= 0.99999


def test_export_is_cached_and_reused(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need("onnx")
    from qembed.model.backends import onnx_export
    from qembed.model.backends.onnx_backend import OnnxBackend
    from qembed.model.pipeline import load_pipeline

    spec = load_pipeline(tiny_model_dir)
    first = OnnxBackend(tiny_model_dir, spec, export_dir=str(tmp_path), progress=False)
    manifest = artifacts.read_manifest(first.path.parent)
    assert manifest["kind"] == "onnx-float32" and manifest["model_revision"] == model_fingerprint(
        tiny_model_dir
    )

    def refuse(*args, **kwargs):
        raise AssertionError("exported again although the export is cached")

    monkeypatch.setattr(onnx_export, "export_float32", refuse)
    second = OnnxBackend(tiny_model_dir, spec, export_dir=str(tmp_path), progress=False)
    assert second.path == first.path
    assert not [
        p for p in first.path.parent.parent.iterdir() if p.name.startswith(".")
    ]  # no temporary folders left


def test_cache_key_follows_the_weights_and_the_recipe(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    weights = folder / "model.safetensors"
    weights.write_bytes(b"x" * 10)
    key = artifacts.artifact_key("onnx-int8", folder, {"a": 1})
    assert artifacts.artifact_key("onnx-int8", folder, {"a": 1}) == key
    assert artifacts.artifact_key("onnx-int8", folder, {"a": 2}) != key
    assert artifacts.artifact_key("onnx-float32", folder, {"a": 1}) != key
    later = time.time() + 10
    os.utime(weights, (later, later))  # re-downloaded / edited weights
    assert artifacts.artifact_key("onnx-int8", folder, {"a": 1}) != key
    key = artifacts.artifact_key("onnx-int8", folder, {"a": 1})
    (folder / "config.json").write_text('{"hidden_size": 16}')
    assert artifacts.artifact_key("onnx-int8", folder, {"a": 1}) != key


def test_failed_build_leaves_nothing_and_success_is_atomic(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    def broken(tmp: Path, stage) -> None:
        with stage("write"):
            (tmp / "half.bin").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        artifacts.cached_artifact(
            "kind", folder, {}, broken, steps=1, export_dir=tmp_path / "x", progress=False
        )
    root = artifacts.export_root(folder, tmp_path / "x")
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []

    calls = []

    def good(tmp: Path, stage) -> None:
        calls.append(tmp)
        with stage("write"):
            (tmp / "model.bin").write_bytes(b"done")

    out = artifacts.cached_artifact(
        "kind", folder, {}, good, steps=1, export_dir=tmp_path / "x", progress=False
    )
    again = artifacts.cached_artifact(
        "kind", folder, {}, good, steps=1, export_dir=tmp_path / "x", progress=False
    )
    assert out == again and len(calls) == 1
    assert (out / "model.bin").read_bytes() == b"done" and (out / artifacts.MANIFEST).is_file()


def test_export_root_next_to_model_or_in_the_qembed_cache(
    tmp_path: Path, minilm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QEMBED_CACHE_HOME", str(tmp_path / "home"))
    local = tmp_path / "my-model"
    local.mkdir()
    assert artifacts.export_root(local) == local / ".qembed" / "exports"
    packaged = artifacts.export_root(minilm_dir)  # inside site-packages: never written into
    assert packaged.parent == tmp_path / "home" / "exports"
    assert artifacts.export_root(local, tmp_path / "elsewhere").parent == tmp_path / "elsewhere"


def test_auto_picks_the_first_installed_backend_in_the_measured_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import qembed.model.backends as registry

    assert resolve_backend("auto", device="cuda") == "torch"
    installed = [b for b in AUTO_CPU["int8"] if not missing_packages(b)]
    assert resolve_backend("auto", device="cpu", quantize="int8") == installed[0]
    monkeypatch.setattr(registry, "missing_packages", lambda name: [] if name == "torch" else [f"{name}-pkg"])
    assert resolve_backend("auto", device="cpu", quantize="int8") == "torch"


def test_backend_errors_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import qembed.model.backends as registry

    with pytest.raises(InputError, match="choose one of torch, onnx, openvino"):
        resolve_backend("tensorrt", device="cpu")
    with pytest.raises(InputError, match="quantize"):
        resolve_backend("onnx", device="cpu", quantize="int4")
    monkeypatch.setattr(registry, "missing_packages", lambda name: ["onnxruntime"] if name == "onnx" else [])
    with pytest.raises(InputError, match=r"pip install 'qembed-server\[onnx\]'"):
        resolve_backend("onnx", device="cpu")
    assert set(BACKENDS) == {"torch", "onnx", "openvino"}


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("mode", ["lasttoken", "mean", "cls"])
def test_numpy_pooling_matches_torch_pooling(mode: str, side: str) -> None:
    import torch

    from qembed.model.backends.pooling_np import pool_numpy
    from qembed.model.pooling import pool

    rng = np.random.default_rng(0)
    states = rng.standard_normal((3, 7, 5)).astype(np.float32)
    mask = np.ones((3, 7), dtype=np.int64)
    for row, pad in ((1, 2), (2, 4)):
        if side == "left":
            mask[row, :pad] = 0
        else:
            mask[row, 7 - pad :] = 0
    skip = np.array([0, 1, 2])
    want = pool(torch.from_numpy(states), torch.from_numpy(mask), mode, torch.from_numpy(skip)).numpy()
    np.testing.assert_allclose(pool_numpy(states, mask, mode, skip), want, rtol=1e-6, atol=1e-6)


def _stsb(shared_data: Path, limit: int | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    import csv

    path = shared_data / "stsb_en" / "sts-test.tsv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return (
        np.array([float(r["score"]) for r in rows]),
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
    )


def _gate(
    model: str, backend: str, shared_data: Path, export_dir: str, **extra
) -> tuple[float, float, float]:
    """(float32 Spearman x100, int8 Spearman x100, mean cosine int8 vs float32) on STS-B test."""
    from scipy.stats import spearmanr

    from qembed import Embedder

    gold, a, b = _stsb(shared_data)
    out = []
    for quantize in ("none", "int8"):
        embedder = Embedder(
            model,
            backend="torch" if quantize == "none" else backend,
            quantize=quantize,
            export_dir=export_dir,
            **extra,
        )
        va, vb = embedder.encode(a, input_type="document"), embedder.encode(b, input_type="document")
        out.append((spearmanr(gold, (va * vb).sum(1)).statistic * 100, np.concatenate([va, vb])))
    (rho32, v32), (rho8, v8) = out
    return rho32, rho8, float(_cosines(v8, v32).mean())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_int8_quality_gate_minilm_stsb(backend: str, shared_data: Path, export_dir: str) -> None:
    """MiniLM STS-B (English test) with each int8 backend within 0.3 points of float32 (issue 17),
    mean cosine to float32 >= 0.99."""
    _need(backend)
    rho32, rho8, cos = _gate("minilm", backend, shared_data, export_dir)
    assert abs(rho32 - 82.03) < 0.01  # the reference value of all-MiniLM-L6-v2 float32
    assert abs(rho8 - rho32) <= 0.3 and cos >= 0.99, (rho32, rho8, cos)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_int8_quality_gate_real_qwen3(backend: str, shared_data: Path, tmp_path: Path) -> None:
    """The int8 gate on real Qwen3-Embedding weights (QEMBED_REAL_MODEL_DIR=/path/to/folder):
    the default recipe passes, or the failure says by how much; STS-B within 0.3 points."""
    folder = os.environ.get("QEMBED_REAL_MODEL_DIR")
    if not folder:
        pytest.skip("set QEMBED_REAL_MODEL_DIR to a real Qwen3-Embedding folder to run the int8 gate on it")
    _need(backend)
    from qembed import Embedder

    # Threshold 0: build and measure whatever the recipe gives, then judge it here with numbers.
    built = Embedder(folder, backend=backend, quantize="int8", int8_min_cosine=0.0, export_dir=str(tmp_path))
    gate = built.info.quantization["gate"]
    assert gate["min_cosine"] >= 0.99 and gate["mean_cosine"] >= 0.998, (
        f"{backend} int8 on {folder}: min cosine {gate['min_cosine']} (needs 0.99, short by "
        f"{0.99 - gate['min_cosine']:.4f}), mean {gate['mean_cosine']} (needs 0.998); recipe {built.info.quantization['recipe']}"
    )
    rho32, rho8, cos = _gate(folder, backend, shared_data, str(tmp_path))
    assert abs(rho8 - rho32) <= 0.3 and cos >= 0.99, (rho32, rho8, cos)
