"""The torch backend: causal attention in every batch shape, pooling positions from the mask,
and quiet loads."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from qembed import Embedder
from qembed.model.pooling import pool

A, B, C, D = 9707, 1879, 785, 6722  # "Hello", " world", "The", " capital"
EOT = 151643


CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
# (device, dtype): float32 everywhere, plus bfloat16 (what ``auto`` picks on CUDA, and on
# CPUs with native bf16 for bf16 checkpoints).
SETUPS = [
    ("cpu", "float32"), ("cpu", "bfloat16"),
    pytest.param("cuda", "float32", marks=needs_cuda), pytest.param("cuda", "bfloat16", marks=needs_cuda),
]  # fmt: skip


@pytest.fixture(scope="module")
def embedders(tiny_embedder: Embedder, tiny_model_dir):
    cache: dict[tuple[str, str], Embedder] = {
        (tiny_embedder.info.device, tiny_embedder.info.dtype): tiny_embedder
    }

    def get(device: str, dtype: str) -> Embedder:
        if (device, dtype) not in cache:
            cache[(device, dtype)] = Embedder(str(tiny_model_dir), device=device, dtype=dtype)
        return cache[(device, dtype)]

    return get


def _states(embedder: Embedder, ids: list[list[int]], mask: list[list[int]]) -> torch.Tensor:
    model = embedder.backend.model
    device = embedder.backend.device
    with torch.inference_mode():
        out = model(
            input_ids=torch.tensor(ids, device=device), attention_mask=torch.tensor(mask, device=device)
        )
    return out.last_hidden_state.float().cpu()


def _tol(dtype: str) -> float:
    return 1e-5 if dtype == "float32" else 2e-2


@pytest.mark.parametrize(("device", "dtype"), SETUPS)
def test_causal_mask_with_equal_lengths(embedders, device: str, dtype: str) -> None:
    """A full (all ones) mask must not turn attention bidirectional."""
    states = _states(embedders(device, dtype), [[A, B, C], [A, B, D]], [[1, 1, 1], [1, 1, 1]])
    tol = _tol(dtype)
    torch.testing.assert_close(states[0, :2], states[1, :2], atol=tol, rtol=tol)
    assert (states[0, 2] - states[1, 2]).abs().max() > 10 * tol


@pytest.mark.parametrize(("device", "dtype"), SETUPS)
def test_causal_mask_with_left_padding(embedders, device: str, dtype: str) -> None:
    embedder = embedders(device, dtype)
    pad = embedder.tokenizer.pad_id
    tol = _tol(dtype) * 10
    states = _states(
        embedder, [[pad, A, B, C], [pad, A, B, D], [A, B, C, D]], [[0, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]
    )
    torch.testing.assert_close(states[0, 1:3], states[1, 1:3], atol=tol, rtol=tol)
    assert (states[0, 3] - states[1, 3]).abs().max() > 10 * _tol(dtype)
    # The padded row's real tokens equal the unpadded row's first three (no leak from the pad, no future).
    torch.testing.assert_close(states[0, 1:4], states[2, 0:3], atol=tol, rtol=tol)
    alone = _states(embedder, [[A, B, C]], [[1, 1, 1]])
    torch.testing.assert_close(states[0, 1:4], alone[0], atol=tol, rtol=tol)


@pytest.mark.parametrize(("device", "dtype"), SETUPS)
def test_batch_invariance_on_every_backend_setup(embedders, device: str, dtype: str) -> None:
    embedder = embedders(device, dtype)
    texts = [
        "a",
        "Hello world",
        "北京是中华人民共和国的首都。",
        " ".join(["padding differs a lot here"] * 20),
    ]
    alone = np.stack([embedder.encode(t) for t in texts])
    together = embedder.encode(texts, batch_size=len(texts))
    cos = (alone * together).sum(1)
    assert cos.min() >= (0.99999 if dtype == "float32" else 0.999), cos


def test_lasttoken_pooling_uses_the_mask_not_the_ids() -> None:
    """Pad id == <|endoftext|> id: only the mask can tell which EOT is the real last token."""
    states = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert torch.equal(pool(states, left, "lasttoken"), states[:, 3])
    assert torch.equal(pool(states, right, "lasttoken"), torch.stack([states[0, 2], states[1, 1]]))


def test_mean_and_cls_pooling_ignore_padding_and_skip() -> None:
    states = torch.tensor([[[1.0], [3.0], [100.0]], [[100.0], [2.0], [4.0]]])
    right = torch.tensor([[1, 1, 0], [0, 1, 1]])
    np.testing.assert_allclose(pool(states, right, "mean").numpy(), [[2.0], [3.0]])
    np.testing.assert_allclose(pool(states, right, "cls").numpy(), [[1.0], [2.0]])
    skip = torch.tensor([1, 1])
    np.testing.assert_allclose(pool(states, right, "mean", skip).numpy(), [[3.0], [4.0]])


def test_backend_facts(embedders) -> None:
    tiny_embedder = embedders("cpu", "float32")
    backend = tiny_embedder.backend
    assert backend.name == "torch" and backend.device == "cpu" and backend.dtype == "float32"
    assert next(backend.model.parameters()).dtype == torch.float32  # not the config's bfloat16
    assert not backend.model.training
    out = tiny_embedder.run(tiny_embedder.prepare(["Hello world", "a"]).windows)
    assert out.dtype == np.float32 and out.shape == (2, 64)


def test_thread_count_and_dtype_options(tiny_model_dir) -> None:
    before = torch.get_num_threads()
    try:
        embedder = Embedder(str(tiny_model_dir), threads=1, dtype="bfloat16")
        assert torch.get_num_threads() == 1
        assert embedder.info.dtype == "bfloat16"
        assert next(embedder.backend.model.parameters()).dtype == torch.bfloat16
        vector = embedder.encode("Hello world")
        assert vector.dtype == np.float32 and abs(np.linalg.norm(vector) - 1) < 1e-3
    finally:
        torch.set_num_threads(before)


def test_threads_default_to_the_cores_available_to_the_process(
    tiny_model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qembed.model.backends.torch_backend import available_cores

    monkeypatch.delenv("QEMBED_THREADS", raising=False)
    assert available_cores() == len(os.sched_getaffinity(0))
    Embedder(str(tiny_model_dir), device="cpu")
    assert torch.get_num_threads() == available_cores()


def test_load_is_quiet(tiny_model_dir, capfd, caplog) -> None:
    """No 'Loading weights' progress bar or transformers chatter on stderr for a clean load."""
    from transformers.utils import logging as tlog

    bars_before, level_before = tlog.is_progress_bar_enabled(), tlog.get_verbosity()
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        Embedder(str(tiny_model_dir))
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err and "Loading weights" not in captured.out
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records
    ]
    # The silencing is scoped to the load: the user's transformers settings are restored.
    assert tlog.is_progress_bar_enabled() == bars_before and tlog.get_verbosity() == level_before


def test_weights_that_do_not_cover_the_model_are_reported(tmp_path, tiny_model_dir, caplog) -> None:
    """Silencing transformers must not hide a real problem: missing weights get a qembed warning."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    state = load_file(str(broken / "model.safetensors"))
    dropped = next(k for k in state if "layers.1." in k)
    del state[dropped]
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="qembed"):
        Embedder(str(broken))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("do not cover the model" in m and "layers.1." in m for m in messages), messages


@needs_cuda
def test_cuda_defaults_to_bfloat16_and_agrees_with_cpu(tiny_model_dir, embedders) -> None:
    embedder = Embedder(str(tiny_model_dir), device="auto")
    assert embedder.info.device.startswith("cuda") and embedder.info.dtype == "bfloat16"
    texts = ["Hello world", "你好", "The capital of China is Beijing.", "def f(x):\n    return x"]
    cpu = embedders("cpu", "float32").encode(texts)
    assert (embedders("cuda", "float32").encode(texts) * cpu).sum(1).min() >= 0.99999
    assert (embedder.encode(texts) * cpu).sum(1).min() > 0.99
