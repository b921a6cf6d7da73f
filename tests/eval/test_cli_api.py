"""`qembed eval ...` and the Python API on the tiny fixture model (random weights: these
tests check wiring, files and errors, never quality)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qembed.cli.eval import eval_group
from qembed.eval import api


@pytest.fixture
def sts_file(tmp_path: Path) -> Path:
    path = tmp_path / "sts.tsv"
    rows = [
        ("A man plays guitar.", "Someone plays music.", 4.0),
        ("A dog runs.", "A cat sleeps.", 1.0),
        ("Rain falls.", "It is raining.", 4.8),
        ("Two cats sleep.", "Cats nap.", 4.2),
        ("He cooks.", "Stocks fell.", 0.2),
    ]
    path.write_text(
        "score\tsentence1\tsentence2\n" + "".join(f"{s}\t{a}\t{b}\n" for a, b, s in rows), encoding="utf-8"
    )
    return path


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(eval_group, list(args), catch_exceptions=False)


def test_cli_sts_writes_json_and_second_run_uses_cache(
    tiny_model_dir: Path, sts_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    args = [
        "sts",
        str(sts_file),
        "--model",
        str(tiny_model_dir),
        "--cache-dir",
        str(tmp_path / "c"),
        "--json",
        str(out),
    ]
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    assert "spearman *" in first.output and "10 embedded" in first.output
    result = json.loads(out.read_text())
    assert result["task"] == "sts" and result["size"] == 5 and result["counts"]["embedded"] == 10
    assert result["prompts"]["both sides"].startswith("'Instruct: Retrieve semantically similar text")
    assert result["target_stats"]["peak_rss_mib"] > 0 and result["target_stats"]["load_seconds"] is not None
    second = _invoke(*args)
    assert "10 from cache, 0 embedded" in second.output
    assert json.loads(out.read_text())["scores"] == result["scores"]


def test_cli_retrieval_and_overrides(tiny_model_dir: Path, make_beir: Any, tmp_path: Path) -> None:
    folder = make_beir(n_docs=15, n_queries=3)
    res = _invoke(
        "retrieval",
        str(folder),
        "--model",
        str(tiny_model_dir),
        "--no-cache",
        "--instruction",
        "Find notes",
        "--json",
        "-",
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert set(payload["scores"]) == {"ndcg@10", "mrr@10", "p@1", "recall@10", "recall@100", "map@100"}
    assert (
        payload["prompts"]["query"] == repr("Instruct: Find notes\nQuery:")
        and payload["prompts"]["document"] == "none"
    )


def test_cli_errors_are_one_line(tiny_model_dir: Path, sts_file: Path, tmp_path: Path) -> None:
    res = _invoke("sts", str(sts_file), "--model", str(tiny_model_dir), "--endpoint", "http://127.0.0.1:9")
    assert res.exit_code == 2 and "--endpoint evaluates a server; --model only apply" in res.output
    res = _invoke("pairs", str(sts_file), "--model", str(tiny_model_dir), "--no-cache")
    assert res.exit_code == 2 and "labels must be 0 or 1" in res.output
    res = _invoke("sts", str(sts_file), "--columns", "a,b", "--model", str(tiny_model_dir))
    assert res.exit_code == 2 and "three comma-separated" in res.output
    res = _invoke("compare", "--sts", str(sts_file))
    assert res.exit_code == 2 and "at least one --model or --endpoint" in res.output


def test_cli_compare_model_and_endpoint(
    tiny_model_dir: Path, fake_server: Any, sts_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    res = _invoke(
        "compare",
        "--model",
        str(tiny_model_dir),
        "--endpoint",
        fake_server.url,
        "--endpoint",
        "http://127.0.0.1:9",
        "--sts",
        str(sts_file),
        "--no-cache",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    data = json.loads(Path(f"{out}.json").read_text())
    names = [t["name"] for t in data["targets"]]
    assert names[0] == "Qwen3-Embedding-tiny" and names[1].startswith("fake-model @ http://127.0.0.1")
    assert (
        "cannot reach" in data["targets"][2]["errors"][0]
    )  # a dead endpoint is reported, the others still run
    spearman = [r["scores"]["spearman"] for r in data["results"]]
    assert len(spearman) == 2 and spearman[0] == pytest.approx(
        spearman[1], abs=1e-4
    )  # tiny model, same numbers both ways
    assert (
        data["targets"][0]["stats"]["peak_rss_mib"] > 0
        and data["targets"][1]["stats"]["server_rss_mib"] == 100.0
    )
    md = Path(f"{out}.md").read_text()
    assert "| sts | sts.tsv | spearman * |" in md and "peak RSS MiB" in md
    assert "latency and memory per target" in res.output
    # what each side got is in the report: a client-side Qwen3 instruction is visible, not a silent gap
    assert "Instruct: " in data["targets"][1]["prompts"]["sts"] and "Prompts each target's texts got" in md
    assert "prompts each target's texts got" in res.output


def test_cli_compare_writes_a_new_folder_by_default(
    tiny_model_dir: Path, sts_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = _invoke("compare", "--model", str(tiny_model_dir), "--sts", str(sts_file), "--no-cache")
    assert res.exit_code == 0, res.output
    [folder] = [p for p in tmp_path.iterdir() if p.name.startswith("qembed-eval-compare-")]
    assert sorted(p.name for p in folder.iterdir()) == ["compare.json", "compare.md"]
    assert not list(tmp_path.glob("*.json"))  # nothing dropped into the current folder itself


def test_api_mirrors_cli(tiny_embedder: Any, sts_file: Path, tmp_path: Path, make_beir: Any) -> None:
    result = api.sts(sts_file, target=tiny_embedder, cache=tmp_path / "c")
    again = api.sts(sts_file, target=tiny_embedder, cache=tmp_path / "c")
    assert again.counts.embedded == 0 and again.scores == result.scores
    assert api.sts(sts_file, target=tiny_embedder, cache=False, instruction_mode="none").prompts == {
        "both sides": "none"
    }
    retrieval = api.retrieval(
        make_beir(n_docs=10, n_queries=2), target=tiny_embedder, cache=None, search="numpy"
    )
    assert retrieval.main_metric == "ndcg@10"
    comparison = api.compare([tiny_embedder], [api.TaskSpec("sts", sts_file)], cache=None)
    assert comparison.results[0].scores == pytest.approx(result.scores)
    assert "| sts |" in comparison.to_markdown()


def test_cli_sigterm_stops_like_ctrl_c_and_keeps_the_cache(
    tiny_model_dir: Path, sts_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from qembed.eval.targets import InProcessTarget

    real_embed = InProcessTarget.embed
    calls = []

    def embed_then_get_killed(self: Any, texts: Any, prompting: Any, role: Any) -> Any:
        calls.append(len(texts))
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would, in the middle of the run
        return real_embed(self, texts, prompting, role)

    monkeypatch.setattr(InProcessTarget, "embed", embed_then_get_killed)
    args = [
        "sts",
        str(sts_file),
        "--model",
        str(tiny_model_dir),
        "--cache-dir",
        str(tmp_path / "c"),
        "--batch-size",
        "2",
    ]
    killed = _invoke(*args)
    assert killed.exit_code == 130 and "interrupted" in killed.output
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    monkeypatch.setattr(InProcessTarget, "embed", real_embed)
    resumed = _invoke(*args)
    assert resumed.exit_code == 0
    assert "10 distinct, 4 from cache, 6 embedded" in resumed.output  # the two batches done before the kill
