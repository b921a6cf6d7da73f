"""``qembed bench throughput`` end to end on the tiny model: one run (module fixture), then
checks that the report holds every field and that its numbers agree with each other."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qembed.bench.local_server import serve_available

pytestmark = pytest.mark.e2e  # `qembed bench throughput` in a subprocess, with its engine processes

ROUNDS, QUERIES, BATCH = 2, 3, 4


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, openai_endpoint, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("throughput")
    cmd = [
        sys.executable, "-m", "qembed.cli.main", "bench", "throughput", "--model", str(tiny_model_dir), "--out", str(out),
        "--workload", "passage:6", "--workload", "query:5", "--batch-size", str(BATCH), "--sweep-batch-sizes", "2",
        "--rounds", str(ROUNDS), "--latency-queries", str(QUERIES), "--st-dtypes", "float32", "--no-st-default",
        "--variant", "t1:threads=1", "--endpoint", f"other={openai_endpoint.url}",
        "--peer", "infinity", "--peer-venv", str(out / "no-such-venv"), "--gemm-size", "128", "--gemm-seconds", "0.1", "--parallel-load",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "throughput.json").read_text()) if (out / "throughput.json").exists() else None
    return {"proc": proc, "out": out, "report": report}


def _engines(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in report["engines"]}


def test_the_command_succeeds_and_writes_json_markdown_and_a_plot(run: dict[str, Any]) -> None:
    proc = run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: Path = run["out"]
    assert (out / "throughput_vs_batch_size.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "throughput.md").read_text()
    for name in ("qembed", "qembed-t1", "st-float32", "other-http", "infinity-http"):
        assert f"| {name} |" in md
    assert "## Single-query latency" in md and "## Machine" in md


def test_report_records_machine_versions_model_and_settings(
    run: dict[str, Any], tiny_model_dir: Path
) -> None:
    r = run["report"]
    m = r["machine"]
    assert (
        m["cpu_model"]
        and m["cores_available"] >= 1
        and m["memory_gb"] > 0
        and isinstance(m["native_bf16"], bool)
    )
    for package in ("python", "qembed", "torch", "transformers", "sentence-transformers"):
        assert r["versions"][package]
    assert (
        r["model"]["path"] == str(tiny_model_dir)
        and r["model"]["params"] > r["model"]["non_embedding_params"] > 0
    )
    assert r["settings"]["model"] == str(tiny_model_dir) and r["settings"]["backend"] == "torch"
    assert r["gemm"]["float32"]["best_gflops"] > 0
    # sampled before the first round and after each: the same conditions as the engines
    assert r["gemm"]["float32"]["samples"] == ROUNDS + 1 == len(r["gemm"]["float32"]["sample_best_gflops"])
    assert r["gemm"]["float32"]["best_gflops"] == max(r["gemm"]["float32"]["sample_best_gflops"])
    assert r["options"]["rounds"] == ROUNDS


def test_every_engine_is_measured_with_its_own_memory(run: dict[str, Any]) -> None:
    engines = _engines(run["report"])
    server_expected = serve_available() is None
    for name in ("qembed", "qembed-t1", "st-float32", "other-http") + (
        ("qembed-http",) if server_expected else ()
    ):
        assert engines[name]["status"] == "ok", engines[name]
    for name in ("qembed", "qembed-t1", "st-float32"):
        assert engines[name]["peak_rss_mb"] > 50 and engines[name]["rss_of"] == "worker process"
    # The variant's Settings reached its engine: a new backend is compared the same way.
    assert engines["qembed-t1"]["info"]["threads"] == 1 and engines["qembed-t1"]["settings"]["threads"] == 1
    assert engines["st-float32"]["role"] == "baseline" and engines["st-float32"]["dtype"] == "float32"
    if server_expected:
        assert (
            engines["qembed-http"]["rss_of"] == "server process"
            and engines["qembed-http"]["peak_rss_mb"] > 50
        )
    # A peer that is not installed is reported with the reason, not silently dropped.
    peer = engines["infinity-http"]
    assert peer["status"] == "unavailable" and "--peer-install" in peer["reason"]


def test_cells_cover_workloads_and_the_batch_sweep(run: dict[str, Any]) -> None:
    keys = {(c["workload"], c["batch_size"]) for c in run["report"]["cells"]}
    assert keys == {("passage", BATCH), ("query", BATCH), ("passage", 2)}


def test_tokens_counted_equal_tokens_sent(run: dict[str, Any]) -> None:
    for cell in run["report"]["cells"]:
        assert cell["tokens_sent_per_round"] == cell["texts"] * cell["tokens_per_text"]
        for name, result in cell["results"].items():
            assert "error" not in result, (name, result)
            assert len(result["rounds"]) == ROUNDS
            for rnd in result["rounds"]:
                assert rnd["tokens_sent"] == cell["tokens_sent_per_round"]
                assert rnd["n_vectors"] == rnd["texts"] == cell["texts"]
                if name.startswith("qembed") or name == "other-http":
                    assert rnd["tokens_counted"] == rnd["tokens_sent"]
    assert all(c["ok"] for c in run["report"]["checks"])
    assert any(c["name"].startswith("MFU at most 100%") for c in run["report"]["checks"])
    assert any("tokens counted by the engine = tokens sent" in c["name"] for c in run["report"]["checks"])


def test_rates_ratios_and_mfu_follow_from_the_rounds(run: dict[str, Any]) -> None:
    report = run["report"]
    gemm = report["gemm"]["float32"]["best_gflops"] * 1e9
    for cell in report["cells"]:
        results = cell["results"]
        assert cell["baseline"] == "st-float32"
        base = results["st-float32"]["tokens_per_s"]
        for result in results.values():
            rates = [r["tokens_sent"] / r["seconds"] for r in result["rounds"]]
            assert result["tokens_per_s"] == pytest.approx(statistics.median(rates), rel=1e-3)
            assert result["tokens_per_s_min"] <= result["tokens_per_s"] <= result["tokens_per_s_max"]
            assert result["texts_per_s"] == pytest.approx(
                result["tokens_per_s"] / cell["tokens_per_text"], rel=1e-2
            )
            assert result["ratio"] == pytest.approx(result["tokens_per_s"] / base, abs=1e-3)
            mfu = (
                statistics.median(cell["gflop_per_round"] * 1e9 / r["seconds"] for r in result["rounds"])
                / gemm
            )
            assert (
                result["mfu"] == pytest.approx(mfu, rel=1e-2, abs=1e-4) and result["mfu_vs_gemm"] == "float32"
            )
        assert results["st-float32"]["ratio"] == 1.0


def test_single_query_latency(run: dict[str, Any]) -> None:
    latency = run["report"]["latency"]
    assert latency["baseline"] == "st-float32" and latency["tokens_per_query"] == 16
    for name, r in latency["results"].items():
        assert r["n"] == ROUNDS * QUERIES, name
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"]
        assert r["speedup"] == pytest.approx(
            latency["results"]["st-float32"]["p50_ms"] / r["p50_ms"], abs=1e-3
        )


def test_engines_compute_the_same_vectors(run: dict[str, Any]) -> None:
    agreement = run["report"]["agreement"]
    assert agreement["reference"] == "qembed" and agreement["texts"] >= 1
    results = agreement["results"]
    assert results["qembed"]["min_cosine"] == pytest.approx(1.0, abs=1e-6)
    for name in ("qembed-t1", "st-float32", "other-http") + (
        ("qembed-http",) if serve_available() is None else ()
    ):
        assert results[name]["min_cosine"] > 0.9999 and results[name]["same_work"], name


def test_targets_are_computed_from_the_same_numbers(run: dict[str, Any]) -> None:
    report = run["report"]
    if serve_available() is not None:
        pytest.skip("qembed serve is not available in this build")
    by_key = {c["key"]: c for c in report["cells"]}
    server_targets = [t for t in report["targets"] if t["name"].startswith("server / in-process")]
    assert len(server_targets) == len(by_key)
    for t in server_targets:
        cell = by_key[t["name"].rsplit(", ", 1)[1]]
        expected = cell["results"]["qembed-http"]["tokens_per_s"] / cell["results"]["qembed"]["tokens_per_s"]
        assert t["value"] == pytest.approx(expected, abs=1e-3) and t["met"] == (expected >= 0.95)
    for cell in report["cells"]:
        if cell["workload"] != "passage":
            continue
        res, key = cell["results"], cell["key"]
        variants = {
            e["name"] for e in report["engines"] if e["kind"] == "qembed" and e["name"] != "qembed"
        } & set(res)
        best = max(variants, key=lambda n: res[n]["ratio"])
        lines = [
            t
            for t in report["targets"]
            if t["name"].startswith("best qembed setting") and t["name"].endswith(key)
        ]
        if res[best]["ratio"] > res["qembed"]["ratio"]:
            assert (
                len(lines) == 1
                and f"({best})" in lines[0]["name"]
                and lines[0]["value"] == res[best]["ratio"]
            )
        else:
            assert lines == []
