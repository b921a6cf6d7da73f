"""Full data sets (slow: every page / abstract through MiniLM on CPU; run with -m slow).
The numbers in docs/SEARCH.md come from bench/search_eval.py, which builds the same indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qembed.eval.search_index import BEIR_FIELDS, evaluate_beir
from qembed.search.api import SearchIndex

from .conftest import K8S_JSONL, TARGET

pytestmark = pytest.mark.slow


def test_full_k8s_set_pending_query(shared_data: Path, minilm_embedder, tmp_path: Path) -> None:
    """All 312 English pages with text, ingested as JSONL records (path as id, en_title as title)."""
    with SearchIndex.open("k8s-full", embedder=minilm_embedder, data_dir=str(tmp_path), create=True) as idx:
        report = idx.index(
            [str(shared_data / K8S_JSONL)],
            text_field="en_text",
            id_field="path",
            title_field="en_title",
            metadata_fields=["zh_title"],
        )
        rows = [json.loads(line) for line in (shared_data / K8S_JSONL).open(encoding="utf-8")]
        assert report.documents_added == len(rows) == 334
        assert idx.stats().documents == 334
        for mode in ("dense", "hybrid"):
            top = [r.chunk.path for r in idx.search("my pod stays pending", k=3, mode=mode)]
            assert TARGET in top, (mode, top)


def test_cranfield_beir_evaluation_of_a_built_index(
    shared_data: Path, minilm_embedder, tmp_path: Path
) -> None:
    folder = shared_data / "cranfield_beir"
    with SearchIndex.open("cranfield", embedder=minilm_embedder, data_dir=str(tmp_path), create=True) as idx:
        idx.index(
            [str(folder / "corpus.jsonl")],
            text_field=BEIR_FIELDS.text_field,
            id_field=BEIR_FIELDS.id_field,
            title_field=BEIR_FIELDS.title_field,
        )
        dense, hybrid = evaluate_beir(idx, folder, modes=("dense", "hybrid"))
    assert dense.n_queries == 225
    # Measured 38.8 (dense) and 41.0 (hybrid) nDCG@10 x100; a broken pipeline scores near 0.
    assert dense.metrics["ndcg@10"] > 0.30
    assert hybrid.metrics["ndcg@10"] > dense.metrics["ndcg@10"]
