"""Acceptance: the harness reproduces MTEB's published all-MiniLM-L6-v2 STSBenchmark score
(cosine Spearman 82.03) with the real model on the real test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qembed.eval.datasets import load_pairs
from qembed.eval.targets import InProcessTarget
from qembed.eval.tasks import evaluate_sts


def test_minilm_stsbenchmark_matches_mteb(minilm_embedder: Any, shared_data: Path) -> None:
    data = load_pairs(shared_data / "stsb_en" / "sts-test.tsv")
    target = InProcessTarget(minilm_embedder, batch_size=64)
    result = evaluate_sts(target, data, cache=None)
    assert result.size == 1379
    assert (
        result.counts.embedded == result.counts.unique == len(set(data.left + data.right))
    )  # each sentence once
    assert target.stats.texts == result.counts.unique
    assert result.scores["spearman"] == pytest.approx(82.03, abs=0.3)
