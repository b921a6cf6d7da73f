"""The matmul reference MFU divides by: one rate per dtype, sampled through the run."""

from __future__ import annotations

import pytest

from qembed.bench.machine import gemm_rate, gemm_reference


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_gemm_rate_per_dtype(dtype: str) -> None:
    rate = gemm_rate(dtype=dtype, n=128, seconds=0.05)
    if rate is None:
        pytest.skip(f"this torch build has no CPU {dtype} matmul")
    assert rate["dtype"] == dtype and rate["runs"] >= 3
    assert rate["best_gflops"] >= rate["median_gflops"] > 0


def test_reference_is_the_best_sample_and_keeps_every_sample() -> None:
    def sample(best: float, median: float, runs: int) -> dict:
        return {
            "dtype": "float32",
            "device": "cpu",
            "threads": 2,
            "n": 64,
            "best_gflops": best,
            "median_gflops": median,
            "runs": runs,
        }

    ref = gemm_reference([sample(90.0, 80.0, 5), sample(150.0, 140.0, 7), sample(120.0, 100.0, 6)])
    assert ref["best_gflops"] == 150.0 and ref["samples"] == 3 and ref["runs"] == 18
    assert ref["sample_best_gflops"] == [90.0, 150.0, 120.0]
    assert ref["median_gflops"] == 100.0
