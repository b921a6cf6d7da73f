"""Search with a reranker: ``SearchIndex.search(rerank=Reranker)`` and ``qembed search --rerank``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qembed.errors import InputError

pytestmark = pytest.mark.integration

DOCS = [
    {"id": f"n{i}", "text": text}
    for i, text in enumerate(
        [
            "The capital of China is Beijing.",
            "Gravity is a force that attracts two bodies towards each other.",
            "Pods are the smallest deployable units of computing in Kubernetes.",
            "A Service exposes a set of pods as a network service.",
            "Beijing hosted the Olympic games in 2008 and 2022.",
            "Newton described gravity with his law of universal gravitation.",
        ]
    )
]
QUERY = "Explain gravity"


@pytest.fixture(scope="module")
def notes_index(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Any) -> Any:
    from qembed.search.api import SearchIndex

    data = tmp_path_factory.mktemp("search-rerank")
    idx = SearchIndex.open("notes", embedder=tiny_embedder, data_dir=str(data), create=True)
    idx.add_documents(DOCS)
    yield idx
    idx.close()


def test_search_with_a_reranker_ranks_by_its_scores(notes_index: Any, tiny_reranker: Any) -> None:
    plain = notes_index.search(QUERY, k=len(DOCS))
    assert all(r.rerank_score is None for r in plain)
    reranked = notes_index.search(QUERY, k=3, rerank=tiny_reranker)
    # every chunk is a candidate (fewer than the searcher's 50): the top 3 are the reranker's top 3
    chunks = {r.chunk.chunk_id: r.chunk for r in plain}
    expected = dict(
        zip(
            chunks,
            tiny_reranker.score([(QUERY, c.embed_text) for c in chunks.values()]).tolist(),
            strict=True,
        )
    )
    best = sorted(expected, key=lambda cid: -expected[cid])[:3]
    assert [r.chunk.chunk_id for r in reranked] == best
    assert [r.rank for r in reranked] == [1, 2, 3]
    for r in reranked:
        assert r.rerank_score == pytest.approx(expected[r.chunk.chunk_id], abs=1e-6)
        assert r.score == r.rerank_score and r.dense_score is not None
        assert r.to_dict()["scores"]["rerank"] == r.rerank_score
    # the reranker decided: its order differs from the embedding's for this query and fixture
    assert [r.chunk.chunk_id for r in reranked] != [r.chunk.chunk_id for r in plain[:3]]


def test_search_rejects_what_is_not_a_reranker(notes_index: Any) -> None:
    with pytest.raises(InputError, match="rerank must be a qembed.Reranker"):
        notes_index.search(QUERY, k=2, rerank="cross-encoder")


def test_cli_search_rerank(
    tmp_path: Path,
    tiny_model_dir: Path,
    reranker_dir: Path,
    tiny_embedder: Any,
    tiny_reranker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qembed.cli.main import cli

    monkeypatch.delenv("QEMBED_RERANK_MODEL", raising=False)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    data = tmp_path / "data"
    common = ["--index", "notes", "--model", str(tiny_model_dir), "--data-dir", str(data)]
    built = CliRunner().invoke(cli(), ["index", str(docs), *common, "--json"])
    assert built.exit_code == 0, built.output
    args = ["search", QUERY, *common, "-k", "3", "--json"]
    res = CliRunner().invoke(cli(), [*args, "--rerank", "--rerank-model", str(reranker_dir)])
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout)
    scores = [r["scores"]["rerank"] for r in results]
    assert len(results) == 3 and all(s is not None for s in scores) and scores == sorted(scores, reverse=True)
    assert [r["score"] for r in results] == scores
    # the same as the Python API with the same models on the same index
    from qembed.search.api import SearchIndex

    with SearchIndex.open("notes", embedder=tiny_embedder, data_dir=str(data)) as idx:
        api = idx.search(QUERY, k=3, rerank=tiny_reranker)
    assert [r["id"] for r in results] == [r.chunk.chunk_id for r in api]
    assert scores == pytest.approx([r.rerank_score for r in api], abs=1e-5)

    missing = CliRunner().invoke(cli(), [*args, "--rerank"])
    assert missing.exit_code == 2 and "No reranker named" in missing.output
    orphan = CliRunner().invoke(cli(), [*args, "--rerank-model", str(reranker_dir)])
    assert orphan.exit_code == 2 and "need --rerank" in orphan.output


@pytest.mark.slow
def test_cli_search_rerank_text_output(tmp_path: Path, tiny_model_dir: Path, reranker_dir: Path) -> None:
    from qembed.cli.main import cli

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    common = ["--index", "notes", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "data")]
    assert CliRunner().invoke(cli(), ["index", str(docs), *common]).exit_code == 0
    text = CliRunner().invoke(
        cli(), ["search", QUERY, *common, "-k", "2", "--rerank", "--rerank-model", str(reranker_dir)]
    )
    assert text.exit_code == 0, text.output
    assert text.output.count("(rerank; dense") == 2
