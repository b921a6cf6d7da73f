"""The load generator: exact accounting of requests, errors by status, tokens; soak RSS."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from qembed.bench.load import LoadOptions, rss_growth, run_load
from qembed.bench.workloads import WorkloadBuilder, parse_workload
from qembed.cli.bench import bench_group


@pytest.fixture(scope="module")
def passages(tiny_model_dir: Path):
    return WorkloadBuilder(tiny_model_dir).build(parse_workload("passage:10"))


def test_levels_account_for_every_request_and_error(openai_endpoint, passages) -> None:
    openai_endpoint.reset(fail_every=5)
    options = LoadOptions(
        openai_endpoint.url,
        concurrency=[1, 3],
        duration=30.0,
        max_requests=10,
        inputs_per_request=2,
        warmup_requests=0,
    )
    result = run_load(options, passages)
    assert result["model"] == "tiny"  # from GET /v1/models
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 3]
    for level in result["levels"]:
        assert level["requests"] == 10  # bounded by count, long before the 30 s
        assert level["successes"] + sum(level["errors"].values()) == level["requests"]
        assert level["errors"] == {"429": 2}  # every 5th of 10
        assert level["error_rate"] == pytest.approx(0.2)
        assert "slow down" in level["error_examples"]["429"]
        # 2 passages of 128 tokens per successful request, counted by us and by the server
        assert level["tokens_sent"] == 8 * 2 * 128
        assert level["tokens_counted"] == level["tokens_sent"]
        lat = level["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert level["requests_per_s"] == pytest.approx(10 / level["wall_seconds"], rel=0.01)
        assert level["tokens_per_s"] == pytest.approx(level["tokens_sent"] / level["wall_seconds"], rel=0.01)
    assert openai_endpoint.requests == 20 and openai_endpoint.failures == 4
    assert openai_endpoint.inputs == [2] * 16
    assert all(c["ok"] for c in result["checks"])


def test_a_dead_endpoint_is_all_transport_errors(passages) -> None:
    from qembed.bench.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = run_load(
        LoadOptions(url, concurrency=[2], duration=10.0, max_requests=6, warmup_requests=1, timeout=5.0),
        passages,
    )
    (level,) = result["levels"]
    assert level["successes"] == 0
    assert level["errors"] == {"transport:ConnectError": 6}
    assert level["latency_ms"]["p50"] is None and level["tokens_per_s"] == 0
    assert result["warmup_statuses"] == {"transport:ConnectError": 1}


def test_duration_bounds_a_level(openai_endpoint, passages) -> None:
    openai_endpoint.reset()
    result = run_load(
        LoadOptions(openai_endpoint.url, concurrency=[2], duration=1.0, warmup_requests=0), passages
    )
    (level,) = result["levels"]
    assert level["requests"] > 0 and level["errors"] == {}
    # Closed loop: the last request starts before the deadline, so the level ends within one request of it.
    assert 1.0 <= level["wall_seconds"] <= 1.0 + 2 * level["latency_ms"]["max"] / 1000 + 0.5


def test_rss_growth_after_warmup() -> None:
    samples = [(0.0, 100.0), (5.0, 150.0), (10.0, 200.0), (15.0, 202.0), (20.0, 204.0)]
    growth = rss_growth(samples, warmup=10.0)
    assert growth["rss_at_warmup_mb"] == 200.0 and growth["rss_end_mb"] == 204.0
    assert growth["growth_pct"] == pytest.approx(2.0)
    assert growth["slope_mb_per_hour"] == pytest.approx(0.4 * 3600, rel=1e-6)
    assert rss_growth(samples[:2], warmup=10.0)["growth_pct"] is None


def test_cli_soak_samples_the_servers_memory(openai_endpoint, tiny_model_dir: Path, tmp_path: Path) -> None:
    openai_endpoint.reset()
    out = tmp_path / "soak"
    args = ["load", "--endpoint", openai_endpoint.url, "--soak", "--concurrency", "2", "--duration", "2.5", "--soak-warmup", "0.5",
            "--rss-interval", "0.25", "--server-pid", str(os.getpid()), "--workload", "query", "--pool", "16",
            "--tokenizer", str(tiny_model_dir), "--warmup-requests", "1", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(bench_group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "soak.json").read_text())
    soak = report["soak"]
    assert soak["pid"] == os.getpid() and soak["concurrency"] == 2
    assert len(soak["samples"]) >= 5
    assert [t for t, _ in soak["samples"]] == sorted(t for t, _ in soak["samples"])
    after = [mb for t, mb in soak["samples"] if t >= 0.5]
    assert soak["rss_at_warmup_mb"] == after[0] and soak["rss_end_mb"] == after[-1]
    assert soak["growth_pct"] == pytest.approx(100 * (after[-1] - after[0]) / after[0], abs=1e-3)
    (level,) = report["levels"]
    assert (
        level["errors"] == {} and level["tokens_sent"] == level["successes"] * 16 == level["tokens_counted"]
    )
    assert sum(w["requests"] for w in level["windows"]) == level["requests"]
    assert report["machine"]["cores_available"] >= 1 and "torch" in report["versions"]
    assert (out / "soak.md").read_text().count("Growth after warm-up") == 1
    assert (out / "soak_rss.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_endpoint_and_serve_together() -> None:
    result = CliRunner().invoke(bench_group, ["load", "--endpoint", "http://127.0.0.1:1", "--serve"])
    assert result.exit_code != 0 and "not both" in result.output


@pytest.mark.e2e
def test_cli_load_levels_against_qembed_serve(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The published path: --serve starts qembed serve, each level is bounded, the server's
    token counts match ours, and the server is stopped afterwards."""
    import subprocess
    import sys

    from qembed.bench.local_server import serve_available

    if serve_available() is not None:
        pytest.skip(serve_available())
    out = tmp_path / "load"
    cmd = [sys.executable, "-m", "qembed.cli.main", "bench", "load", "--serve", "--model", str(tiny_model_dir), "--concurrency", "1,3",
           "--duration", "20", "--max-requests", "12", "--workload", "passage", "--pool", "8", "--inputs-per-request", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "qembed serve stopped (exit code 0)" in proc.stderr
    report = json.loads((out / "load.json").read_text())
    assert report["settings"]["model"] == str(tiny_model_dir) and report["tokenizer"] == str(tiny_model_dir)
    for level in report["levels"]:
        assert level["requests"] == level["successes"] == 12 and level["errors"] == {}
        assert level["tokens_sent"] == level["tokens_counted"] == 12 * 2 * 128
        assert level["latency_ms"]["p50"] <= level["latency_ms"]["p90"] <= level["latency_ms"]["p99"]
    assert all(c["ok"] for c in report["checks"])
    assert (out / "latency_vs_concurrency.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 3 |" in (out / "load.md").read_text()
