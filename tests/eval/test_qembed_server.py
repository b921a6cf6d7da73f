"""Evaluating through `qembed serve` gives the in-process numbers (to 1e-4), on real MiniLM.

The server runs as a subprocess, exactly as a user starts it; we wait for GET /ready to
answer 200 (polling with a deadline) before evaluating.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qembed.eval.datasets import PairData, load_beir, load_pairs
from qembed.eval.prompts import Prompting
from qembed.eval.targets import HttpTarget, InProcessTarget
from qembed.eval.tasks import evaluate_code, evaluate_pairs, evaluate_retrieval, evaluate_sts
from tests.conftest import SHARED

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("qembed.cli.serve") is None,
        reason="qembed.cli.serve is not importable: the `qembed serve` command does not exist yet",
    ),
]

QEMBED = Path(sys.executable).with_name("qembed")
READY_DEADLINE_S = 180.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def minilm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(QEMBED), "serve", "--model", "minilm", "--port", str(port), "--host", "127.0.0.1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"qembed serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"qembed serve not ready after {READY_DEADLINE_S:.0f} s:\n{log.read_text()[-3000:]}"
                )
            try:
                proc.wait(timeout=0.2)  # the poll interval; returns at once if the server dies
            except subprocess.TimeoutExpired:
                pass
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _same(a: Any, b: Any) -> None:
    assert a.scores.keys() == b.scores.keys()
    for name in a.scores:
        assert b.scores[name] == pytest.approx(a.scores[name], abs=1e-4), (a.task, name)


def _head(data: PairData, n: int) -> PairData:
    return PairData(data.name, data.left[:n], data.right[:n], data.scores[:n])


TOY_CODE = PairData(
    "toy-code",
    ["python sort a list", "read a json file", "python sort a list", "reverse a string"],
    [
        "def sort_items(xs):\n    return sorted(xs)",
        "def load(path):\n    return json.load(open(path))",
        "def load(path):\n    return json.load(open(path))",
        "def rev(s):\n    return s[::-1]",
    ],
    np.array([1.0, 1.0, 0.0, 1.0]),
)
TOY_STS = PairData(
    "toy-sts",
    ["A man plays guitar.", "A dog runs.", "Rain falls on the city.", "A child reads a book."],
    ["Someone plays an instrument.", "A cat sleeps.", "It is raining downtown.", "A kid is reading."],
    np.array([4.2, 0.8, 4.6, 4.8]),
)


def test_server_numbers_equal_in_process(minilm_server: str, minilm_embedder: Any, make_beir: Any) -> None:
    local = InProcessTarget(minilm_embedder)
    remote = HttpTarget(minilm_server, batch_size=32, concurrency=4)
    shared = SHARED / "data"
    if shared.is_dir():  # real data when the workplace has it, small hand-made pairs otherwise
        sts = _head(load_pairs(shared / "stsb_en" / "sts-test.tsv"), 30)
        cosqa = _head(load_pairs(shared / "cosqa" / "cosqa-dev.json"), 12)
    else:
        sts, cosqa = TOY_STS, TOY_CODE
    beir = load_beir(make_beir(n_docs=20, n_queries=4))
    _same(
        evaluate_sts(local, sts, prompting=Prompting("sts", mode="server")),
        evaluate_sts(remote, sts, prompting=Prompting("sts", mode="server")),
    )
    _same(
        evaluate_sts(local, TOY_STS, prompting=Prompting("sts", mode="none")),
        evaluate_sts(remote, TOY_STS, prompting=Prompting("sts", mode="none")),
    )
    _same(
        evaluate_pairs(local, cosqa, prompting=Prompting("pair_classification", mode="server")),
        evaluate_pairs(remote, cosqa, prompting=Prompting("pair_classification", mode="server")),
    )
    _same(
        evaluate_code(local, cosqa, prompting=Prompting("code_retrieval", mode="server")),
        evaluate_code(remote, cosqa, prompting=Prompting("code_retrieval", mode="server")),
    )
    _same(
        evaluate_retrieval(local, beir, prompting=Prompting("retrieval", mode="server")),
        evaluate_retrieval(remote, beir, prompting=Prompting("retrieval", mode="server")),
    )
    assert remote.stats.summary()["latency_ms_p50"] > 0
    remote.close()
