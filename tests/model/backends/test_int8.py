"""int8 that stays right on real LLM weights: the outlier fixture, SmoothQuant, per-token
int8 Linear layers and the quality gate (issue 17).

The fixture (``make_model(outliers=1)``) gives random weights the outlier channels and
massive activations of real checkpoints; without them every int8 recipe looks fine
(``tests/model/test_backends.py`` checks the plain fixture and MiniLM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qembed.errors import Int8QualityError
from qembed.model.backends import AUTO_CPU, artifacts, missing_packages
from qembed.model.backends.int8 import gate
from qembed.model.backends.int8.calibration import calibration_texts
from qembed.model.backends.int8.recipes import DEFAULT_MIN_COSINE, Int8Recipe
from qembed.model.backends.int8.torch_w8a8 import Int8Linear

TEXTS = [
    "如何解决Kubernetes Pod一直处于Pending状态？",
    "The capital of China is Beijing, and its population is over twenty million.",
    "def add(a, b):\n    return a + b",
    "今天天气很好，我们去公园散步吧。",
    "kubectl describe pod web-0 显示 CrashLoopBackOff, 请检查 liveness probe.",
    "hi",
]


# A deliberately lossy recipe: ONNX Runtime's per-tensor dynamic int8, no smoothing, no float layer.
LOSSY_ONNX = {
    "backend": "onnx",
    "quantize": "int8",
    "int8_smoothquant": 0.0,
    "int8_activations": "per-tensor",
    "int8_keep": [],
}


def _need(backend: str) -> None:
    missing = missing_packages(backend)
    if missing:
        pytest.skip(f"the {backend} backend needs {', '.join(missing)}")


@pytest.fixture(scope="module")
def outlier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qembed.dev.make_model import make_model

    return make_model(
        tmp_path_factory.mktemp("models") / "Qwen3-tiny-outliers", shape="tiny", seed=0, outliers=1.0
    )


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("int8-exports"))


def _manifest(export_dir: str, kind: str, **recipe: object) -> Path:
    """The manifest of the ``kind`` build (``onnx-int8``, ``torch-int8``...) whose recipe has
    ``recipe``'s values: the shared export folder holds every backend's builds, and several
    record the same options."""
    return next(
        p
        for p in Path(export_dir).rglob(artifacts.MANIFEST)
        if (m := json.loads(p.read_text()))["kind"] == kind
        and all(m["recipe"].get(k) == v for k, v in recipe.items())
    )


def _embedder(folder: Path, export_dir: str, **settings):
    from qembed import Embedder

    return Embedder(str(folder), device="cpu", export_dir=export_dir, **settings)


# -- the fixture -------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_outlier_fixture_has_the_structure_it_documents(outlier_dir: Path) -> None:
    from safetensors.torch import load_file

    note = json.loads((outlier_dir / "qembed-fixture.json").read_text())
    state = load_file(str(outlier_dir / "model.safetensors"))
    gain = state["layers.0.input_layernorm.weight"]
    others = torch.ones(gain.numel(), dtype=torch.bool)
    others[note["outlier_channels"]] = False
    assert (gain[note["outlier_channels"]].abs() > 50 * gain[others].abs().median()).all()
    emb = state["embed_tokens.weight"]
    massive = emb[note["massive_tokens"], note["massive_channel"]]
    assert (massive.abs() > 50 * emb.abs().median()).all()
    up = state["layers.0.mlp.up_proj.weight"]
    assert (up[note["up_proj_rows"]].abs().amax(1) > 5 * up.abs().amax(1).median()).all()


@pytest.mark.integration
def test_the_fixture_breaks_per_tensor_int8_as_real_weights_do(outlier_dir: Path, export_dir: str) -> None:
    """Without smoothing or a float first layer, ONNX Runtime's per-tensor dynamic int8 falls far below the gate on
    the fixture: what the fixture is for. The gate refuses it, with the measured numbers."""
    _need("onnx")
    with pytest.raises(Int8QualityError) as info:
        _embedder(outlier_dir, export_dir, **LOSSY_ONNX)
    message = info.value.message
    assert "min cosine" in message and f"threshold {DEFAULT_MIN_COSINE:.5f}" in message
    assert "--int8-min-cosine" in message and "--dtype bfloat16" in message
    measured = float(message.split("min cosine ")[1].split(" ")[0])
    assert measured < 0.9


# -- SmoothQuant and the int8 Linear -------------------------------------------------------------


@pytest.mark.parametrize("which", ["qwen3", "minilm"])
def test_smoothing_does_not_change_the_float_model(which: str, outlier_dir: Path, minilm_dir: Path) -> None:
    """Folded into norms and producer rows, the scales leave the float function unchanged."""
    from qembed.model.backends.int8.prepare import smoothed_float32
    from qembed.model.backends.onnx_export import _load_float32, check_batch
    from qembed.model.pipeline import load_pipeline

    folder = outlier_dir if which == "qwen3" else minilm_dir
    spec = load_pipeline(folder)
    plain = _load_float32(folder)
    smoothed, record = smoothed_float32(folder, spec, Int8Recipe(alpha=0.5))
    assert record["alpha"] == 0.5
    changed = [n for n, p in smoothed.state_dict().items() if not torch.equal(p, plain.state_dict()[n])]
    assert changed  # really rescaled
    ids, mask = check_batch(int(plain.config.vocab_size), spec.padding_side, rows=3, width=12, seed=3)
    with torch.inference_mode():
        a = plain(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        b = smoothed(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    real = torch.from_numpy(mask).bool()
    cos = torch.nn.functional.cosine_similarity(a[real], b[real], dim=-1)
    assert cos.min() >= 0.99999


def test_int8_linear_is_close_and_per_token() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    q = Int8Linear(linear)
    x = torch.randn(5, 7, 64)
    x[0, 0] *= 1000  # one outlier token
    with torch.inference_mode():
        want, got = linear(x), q(x)
        alone = q(x[1:2])
    cos = torch.nn.functional.cosine_similarity(want.reshape(-1, 32), got.reshape(-1, 32), dim=-1)
    assert cos.min() >= 0.999  # the outlier token coarsens no other token
    assert torch.equal(alone, got[1:2])  # a token's result does not depend on its batch-mates
    assert q.weight_t.dtype == torch.int8


def _one_matmul_onnx(path: Path, w: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = w.shape
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="layers.1.mlp.up_proj/MatMul")
    graph = helper.make_graph(
        [node],
        "one-matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(path))


def test_blocks_beat_per_token_scales_on_one_matmul(tmp_path: Path) -> None:
    """With outlier input channels, one scale per token and block of 128 channels keeps every
    row closer to float64 than one scale per token: why ``auto`` falls back to blocks."""
    _need("onnx")
    import onnxruntime as ort

    from qembed.model.backends.int8.onnx_blockwise import quantize_blockwise
    from qembed.model.backends.int8.onnx_per_token import quantize_per_token

    rng = np.random.default_rng(0)
    k, n = 512, 256
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    x = rng.standard_normal((64, k)).astype(np.float32)
    x[:, :3] *= 60  # systematic outlier channels
    x[5] *= 20  # a massive-activation token
    _one_matmul_onnx(tmp_path / "f32.onnx", w)
    assert quantize_blockwise(tmp_path / "f32.onnx", tmp_path / "blocks.onnx") == 1
    assert quantize_per_token(tmp_path / "f32.onnx", tmp_path / "token.onnx") == 1
    want = x.astype(np.float64) @ w

    def worst(name: str) -> float:
        sess = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": x})[0].astype(np.float64)
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        return float(cos.min())

    blocks, token = worst("blocks.onnx"), worst("token.onnx")
    assert blocks >= 0.999 and blocks > token


# -- the gate ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_each_default_recipe_meets_the_gate_or_refuses(
    backend: str, outlier_dir: Path, export_dir: str
) -> None:
    _need(backend)
    try:
        embedder = _embedder(outlier_dir, export_dir, backend=backend, quantize="int8")
    except Int8QualityError as exc:
        assert "min cosine" in exc.message and "--int8-min-cosine" in exc.message
        return
    q = embedder.info.quantization
    assert q is not None and q["gate"]["min_cosine"] >= DEFAULT_MIN_COSINE
    assert q["gate"]["texts"] == len(calibration_texts("gate"))
    assert embedder.info.dtype == "int8"


def test_the_recommended_cpu_int8_backend_meets_the_gate(
    outlier_dir: Path, export_dir: str, tiny_model_dir: Path
) -> None:
    installed = [b for b in AUTO_CPU["int8"] if not missing_packages(b)]
    embedder = _embedder(outlier_dir, export_dir, backend="auto", quantize="int8")
    assert embedder.info.backend in installed  # the first in the measured order that passes the gate
    gate_result = embedder.info.quantization["gate"]
    assert gate_result["min_cosine"] >= 0.99 and gate_result["mean_cosine"] >= 0.998
    reference = _embedder(outlier_dir, export_dir, dtype="float32").encode(TEXTS)
    got = embedder.encode(TEXTS)
    assert ((reference * got).sum(1)).min() >= 0.99  # and on texts outside the calibration set


@pytest.mark.integration
def test_onnx_per_token_groups_are_matmulnbits_and_hold_on_outliers(
    outlier_dir: Path, export_dir: str
) -> None:
    """The recipe ``auto`` falls back to: every int8 MatMul is an 8-bit MatMulNBits with int8
    products (accuracy_level 4), the kept layer stays float, the gate passes with the issue's
    margin, and a text's vector does not depend on its batch-mates."""
    _need("onnx")
    import onnx

    from qembed.model.backends.int8.onnx_blockwise import ACCURACY_LEVEL_INT8, BLOCK

    embedder = _embedder(
        outlier_dir, export_dir, backend="onnx", quantize="int8", int8_activations="per-token-group"
    )
    q = embedder.info.quantization
    assert q["gate"]["activations"] == "per-token-group"
    assert q["gate"]["min_cosine"] >= 0.99 and q["gate"]["mean_cosine"] >= 0.998
    manifest = _manifest(export_dir, "onnx-int8", activations="per-token-group")
    graph = onnx.load(str(manifest.parent / "model.onnx"), load_external_data=False).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
    assert attrs["bits"] == 8 and attrs["block_size"] == BLOCK
    assert attrs["accuracy_level"] == ACCURACY_LEVEL_INT8
    assert all("layers.0." not in n.name for n in nbits)
    float_matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and "layers.0." in n.name]
    assert len(float_matmuls) == 7  # q, k, v, o, gate, up, down of the kept first layer
    together = embedder.encode(TEXTS)
    alone = embedder.encode(TEXTS[1:2])
    assert float(together[1] @ alone[0]) >= 0.99999  # float rounding only, no shared scale


@pytest.mark.integration
def test_the_measurement_is_cached_with_the_build(
    outlier_dir: Path, export_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second start reads the manifest: it neither rebuilds nor re-measures."""
    first = _embedder(outlier_dir, export_dir, backend="torch", quantize="int8", int8_min_cosine=0.5)
    artifact = _manifest(export_dir, "torch-int8")
    manifest = json.loads(artifact.read_text())
    assert manifest["quality"]["min_cosine"] == first.info.quantization["gate"]["min_cosine"]

    def refuse(*args, **kwargs):
        raise AssertionError("measured again although the build is cached")

    monkeypatch.setattr(gate, "measure", refuse)
    second = _embedder(outlier_dir, export_dir, backend="torch", quantize="int8", int8_min_cosine=0.5)
    assert second.info.quantization == first.info.quantization | {
        "gate": {**first.info.quantization["gate"], "threshold": 0.5}
    }
    assert np.allclose(second.encode(TEXTS), first.encode(TEXTS), atol=1e-6)


@pytest.mark.integration
def test_a_lower_threshold_accepts_the_loss_knowingly(outlier_dir: Path, export_dir: str) -> None:
    _need("onnx")
    embedder = _embedder(outlier_dir, export_dir, **LOSSY_ONNX, int8_min_cosine=-1.0)
    assert embedder.info.quantization["gate"]["min_cosine"] < 0.9
    assert embedder.info.quantization["gate"]["threshold"] == -1.0
    assert embedder.info.quantization["recipe"]["alpha"] is None
    assert embedder.info.quantization["recipe"]["activations"] == "per-tensor"


def test_enforce_refuses_a_build_without_a_measurement() -> None:
    with pytest.raises(Int8QualityError, match="no quality measurement"):
        gate.enforce(None, min_cosine=0.99, backend="onnx", model="m")
    gate.enforce(
        {"min_cosine": 0.995, "mean_cosine": 0.999, "texts": 3}, min_cosine=0.99, backend="onnx", model="m"
    )


@pytest.mark.integration
def test_alpha_auto_is_searched_on_the_calib_split_and_recorded(outlier_dir: Path) -> None:
    from qembed.model.backends.int8.prepare import ALPHA_GRID, calibration_stats, resolve_alpha
    from qembed.model.backends.onnx_export import _load_float32
    from qembed.model.pipeline import load_pipeline

    spec = load_pipeline(outlier_dir)
    model = _load_float32(outlier_dir)
    stats = calibration_stats(model, outlier_dir, spec)
    assert stats.tokens > 1000 and stats.absmax  # every Linear saw the calib split
    alpha, record = resolve_alpha(model, outlier_dir, spec, stats, Int8Recipe(alpha="auto"))
    assert alpha in ALPHA_GRID and record["alpha"] == alpha
    trials = record["trials"]
    assert set(trials) == {f"{a:g}" for a in ALPHA_GRID}
    best = trials[f"{alpha:g}"]["min_cosine"]
    assert all(t["min_cosine"] <= best for t in trials.values())


@pytest.mark.integration
def test_info_over_http_carries_the_gate(outlier_dir: Path, export_dir: str) -> None:
    """/info shows the recipe and the measured cosine of the int8 build being served."""
    from fastapi.testclient import TestClient

    from qembed import Settings
    from qembed.server.app import create_app

    settings = Settings(
        model=str(outlier_dir), backend="torch", quantize="int8", export_dir=export_dir, warmup=False
    )
    with TestClient(create_app(settings)) as client:
        body = client.get("/info").json()
    assert body["dtype"] == "int8"
    gate_result = body["quantization"]["gate"]
    assert gate_result["min_cosine"] >= DEFAULT_MIN_COSINE and gate_result["threshold"] == DEFAULT_MIN_COSINE
    assert body["quantization"]["recipe"]["keep"] == ["layers.0."]


def test_the_bench_report_prints_the_gate_with_its_digits() -> None:
    from qembed.bench.report import gate_lines

    q = {
        "gate": {"min_cosine": 0.990558, "mean_cosine": 0.999203, "texts": 133, "threshold": 0.99},
        "recipe": {"keep": ["layers.0."], "smoothquant": {"alpha": 0.5}},
    }
    lines = gate_lines([{"name": "torch-int8", "info": {"quantization": q}}, {"name": "st", "info": {}}])
    assert "| torch-int8 | 0.99056 | 0.99920 | 133 | 0.9900 | 0.50 | layers.0. |" in lines
    assert gate_lines([{"name": "st", "info": {}}]) == []


@pytest.mark.integration
def test_auto_int8_skips_a_backend_that_misses_the_gate(
    outlier_dir: Path, export_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused build does not stop ``--backend auto``: the next backend in the order is tried."""
    from qembed.model import backends
    from qembed.model.backends import onnx_backend

    _need("onnx")

    def refused(*args, **kwargs):
        raise Int8QualityError("Refusing to serve the onnx int8 build (test): min cosine 0.5")

    monkeypatch.setitem(backends.AUTO_CPU, "int8", ("onnx", "torch"))
    monkeypatch.setattr(onnx_backend, "OnnxBackend", refused)
    embedder = _embedder(outlier_dir, export_dir, backend="auto", quantize="int8")
    assert (
        embedder.info.backend == "torch"
        and embedder.info.quantization["gate"]["min_cosine"] >= DEFAULT_MIN_COSINE
    )
    monkeypatch.setitem(backends.AUTO_CPU, "int8", ("onnx",))
    with pytest.raises(Int8QualityError, match="No int8 backend passes"):
        _embedder(outlier_dir, export_dir, backend="auto", quantize="int8")
