"""The llama.cpp peer for real, on the tiny model: llama.cpp's converter to GGUF BF16 and Q8_0,
llama-cpp-python embedding it, and the bench run that puts it beside qembed.

Needs an existing peer venv (``/tmp/qembed-peer-llamacpp``, or ``QEMBED_LLAMACPP_VENV``) with
llama-cpp-python built in it: building it takes 5-15 minutes, so CI never does; without it
these tests skip and say why. Make one with ``qembed bench throughput --peer llama.cpp
--peer-install`` (any model) or see bench/README.md. Marked ``slow`` (``pytest -m slow``): with a
venv present they take over a minute, and the default suite must stay within CI's time budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qembed.bench import peer_llamacpp as pl

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TEXTS = [
    "What is the capital of China?",
    "The capital of China is Beijing, a city of more than twenty million people.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Mixed: 机器学习 (machine learning) uses data; see https://example.org/a?b=1.",
    "short",
]
# Measured on the tiny model (hidden 64, seeded random weights) against qembed float32, these
# six texts, llama-cpp-python 0.3.36 (AVX-512 BF16/VNNI build): BF16 min 0.99984 / mean 0.99993
# (bf16 rounding only), Q8_0 min 0.99941 / mean 0.99958. The floors leave room for other CPUs'
# kernels while still failing on any real difference (wrong pooling or tokens give < 0.9).
BF16_MIN_COSINE = 0.999
Q8_0_MIN_COSINE = 0.995


@pytest.fixture(scope="module")
def peer() -> pl.LlamaCppStatus:
    venv = Path(os.environ.get("QEMBED_LLAMACPP_VENV", str(pl.DEFAULT_LLAMACPP_VENV)))
    status = pl.ensure_llamacpp(venv, install=False)
    if not status.available:
        pytest.skip(f"no llama.cpp peer venv: {status.reason}")
    return status


@pytest.fixture(scope="module")
def ggufs(
    peer: pl.LlamaCppStatus, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("gguf-cache")
    return {quant: pl.gguf_file(peer, tiny_model_dir, quant, export_dir=cache) for quant in pl.QUANTS}


def _runner(
    peer: pl.LlamaCppStatus, gguf: Path, quant: str, hf_model: Path, log_dir: Path
) -> pl.LlamaCppRunner:
    [spec] = pl.engine_specs(peer, {quant: gguf}, hf_model=hf_model, pooling="lasttoken", threads=2, batch_tokens=[512],
                             check_texts=TEXTS, log_dir=log_dir)  # fmt: skip
    return pl.LlamaCppRunner(spec)


@pytest.mark.parametrize("quant", list(pl.QUANTS))
def test_llamacpp_embeds_the_tiny_model_like_qembed(quant: str, peer: pl.LlamaCppStatus, ggufs: dict[str, Path], tiny_model_dir: Path,
                                                     tiny_embedder: Any, tmp_path: Path) -> None:  # fmt: skip
    runner = _runner(peer, ggufs[quant], quant, tiny_model_dir, tmp_path)
    try:
        info = runner.info()
        vectors = runner.vectors(TEXTS)
        tokens, n, dim = runner.batch(TEXTS, 4)
    finally:
        runner.close()
    meta = info["gguf_metadata"]
    # last-token pooling written by the converter, and used by the context
    assert meta["qwen3.pooling_type"] in (3, "3") and info["pooling_type"] == 3
    # <|endoftext|> appended: the same ids as qembed's tokenizer, every text
    assert info["token_check"] == {"texts": len(TEXTS), "identical": len(TEXTS), "last_ids": [151643]}, info[
        "token_check"
    ]
    assert info["flash_attn"] is True and info["threads"] == 2
    ours = tiny_embedder.encode(TEXTS, input_type="document")
    assert vectors.shape == ours.shape and (n, dim) == ours.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    cos = (vectors * ours).sum(1) / np.linalg.norm(ours, axis=1)
    floor = BF16_MIN_COSINE if quant == "bf16" else Q8_0_MIN_COSINE
    assert cos.min() > floor, f"{quant}: cosine to qembed float32 per text {np.round(cos, 5).tolist()}"
    counted = tiny_embedder.encode_with_usage(TEXTS, input_type="document").prompt_tokens
    assert tokens == counted  # llama.cpp ran exactly the tokens qembed runs


def test_bf16_is_closer_to_float32_than_q8_0(
    peer: pl.LlamaCppStatus, ggufs: dict[str, Path], tiny_model_dir: Path, tiny_embedder: Any, tmp_path: Path
) -> None:
    ours = tiny_embedder.encode(TEXTS, input_type="document")
    mean_cos = {}
    for quant in pl.QUANTS:
        runner = _runner(peer, ggufs[quant], quant, tiny_model_dir, tmp_path)
        try:
            mean_cos[quant] = float((runner.vectors(TEXTS) * ours).sum(1).mean())
        finally:
            runner.close()
    assert mean_cos["bf16"] >= mean_cos["q8_0"], mean_cos


def test_bench_throughput_puts_llamacpp_beside_qembed(
    peer: pl.LlamaCppStatus, tiny_model_dir: Path, tmp_path: Path
) -> None:
    venv = Path(str(peer.python)).parent.parent
    cmd = [
        sys.executable, "-m", "qembed.cli.main", "bench", "throughput", "--model", str(tiny_model_dir), "--out", str(tmp_path),
        "--workload", "passage:4", "--batch-size", "2", "--rounds", "1", "--latency-queries", "2", "--no-server",
        "--st-dtypes", "float32", "--no-st-default", "--peer", "llama.cpp", "--llamacpp-venv", str(venv), "--no-peer-install",
        "--gemm-size", "128", "--gemm-seconds", "0.1",
    ]  # fmt: skip
    # Conversions go to a folder of this test, never next to the shared session fixture (other
    # tests compare that folder's files, e.g. tests/cli/test_download.py).
    env = {**os.environ, "QEMBED_EXPORT_DIR": str(tmp_path / "exports")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert (tmp_path / "throughput.json").is_file(), proc.stderr[-3000:]
    report = json.loads((tmp_path / "throughput.json").read_text())
    # The one check machine noise can fail here: MFU of a tiny model against a 128^3 matmul on a
    # busy machine (not llama.cpp's business); every other check must pass.
    failed = [c for c in report["checks"] if not c["ok"] and not c["name"].startswith("MFU")]
    assert not failed and (proc.returncode == 0 or not all(c["ok"] for c in report["checks"])), (
        failed,
        proc.stderr[-2000:],
    )
    engines = {e["name"]: e for e in report["engines"]}
    for quant in pl.QUANTS:
        e = engines[f"llamacpp-{quant}"]
        assert e["status"] == "ok", e
        assert e["rss_of"] == "engine process" and e["peak_rss_mb"] > 5 and e["dtype"] == pl.QUANTS[quant][1]
        [cell] = report["cells"]
        r = cell["results"][f"llamacpp-{quant}"]
        assert r["tokens_per_s"] > 0 and r["ratio"] is not None
        assert report["latency"]["results"][f"llamacpp-{quant}"]["p50_ms"] > 0
        assert report["agreement"]["results"][f"llamacpp-{quant}"]["same_work"] is True
    assert report["versions"]["llama-cpp-python (peer venv)"] == peer.version
    names = [c["name"] for c in report["checks"]]
    assert any("llamacpp-bf16: token ids" in n for n in names) and any(
        "llamacpp-q8_0: pooling type" in n for n in names
    )
    md = (tmp_path / "throughput.md").read_text()
    assert "## Peer: llama.cpp" in md and "| llamacpp-bf16 |" in md and "| llamacpp-q8_0 |" in md
