"""Task layer: instructions per side, each distinct text embedded once, metrics wired to the
right vectors. Fake targets make the expected numbers computable here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qembed.errors import InputError
from qembed.eval import metrics
from qembed.eval.datasets import PairData, load_beir
from qembed.eval.prompts import Prompting, Role
from qembed.eval.targets import InProcessTarget, TargetStats
from qembed.eval.tasks import evaluate_code, evaluate_pairs, evaluate_retrieval, evaluate_sts
from qembed.model.instructions import TASKS, format_instruction

from .conftest import FakeTarget


def test_prompting_follows_the_task_presets() -> None:
    retrieval = Prompting("retrieval")
    assert retrieval.engine_options("query") == {"task": "retrieval", "input_type": "query"}
    assert retrieval.engine_options("document") == {"task": "retrieval", "input_type": "document"}
    assert retrieval.client_prefix("query") == format_instruction(TASKS["retrieval"].instruction)
    assert retrieval.client_prefix("document") == ""
    sts = Prompting("sts")
    assert (
        sts.client_prefix("document")
        == sts.client_prefix("query")
        == "Instruct: Retrieve semantically similar text\nQuery:"
    )
    custom = Prompting("code_retrieval", instruction="Find the function")
    assert custom.engine_options("query") == {"instruction": "Find the function"}
    assert custom.engine_options("document") == {"task": "code_retrieval", "input_type": "document"}
    assert custom.client_prefix("query") == "Instruct: Find the function\nQuery:"
    none = Prompting("sts", mode="none")
    assert none.engine_options("query") == {} and none.client_prefix("query") == ""
    with pytest.raises(InputError, match="Unknown task preset"):
        Prompting("nope")
    with pytest.raises(InputError, match="instruction mode"):
        Prompting("sts", mode="sideways")  # type: ignore[arg-type]


def test_in_process_prompts_are_what_the_engine_applies(tiny_embedder: Any, minilm_embedder: Any) -> None:
    qwen = InProcessTarget(tiny_embedder)
    assert qwen.prompt_description(Prompting("retrieval"), "query") == repr(
        format_instruction(TASKS["retrieval"].instruction)
    )
    assert qwen.prompt_description(Prompting("retrieval"), "document") == "none"
    minilm = InProcessTarget(minilm_embedder)  # trained without instructions: presets add nothing
    assert minilm.prompt_description(Prompting("retrieval"), "query") == "none"
    assert minilm.prompt_description(Prompting("sts"), "document") == "none"


class TableTarget(FakeTarget):
    """Vectors from a lookup table, to make metrics come out exactly as planned."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        super().__init__(dim=len(next(iter(table.values()))))
        self.table = table
        self.roles: list[tuple[str, str]] = []

    def embed(self, texts: Sequence[str], prompting: Prompting, role: Role) -> np.ndarray:
        self.calls += 1
        self.embedded.extend(texts)
        self.roles.extend((t, role) for t in texts)
        return np.asarray([self.table[t] for t in texts], dtype=np.float32)


def _unit(angle_deg: float) -> list[float]:
    a = np.radians(angle_deg)
    return [float(np.cos(a)), float(np.sin(a))]


def test_sts_embeds_distinct_sentences_once_and_scores_cosine() -> None:
    target = TableTarget({"a": _unit(0), "b": _unit(10), "c": _unit(60), "d": _unit(90)})
    data = PairData("toy", ["a", "a", "a", "b"], ["b", "c", "d", "d"], np.array([5.0, 3.0, 0.0, 1.0]))
    result = evaluate_sts(target, data)
    assert sorted(target.embedded) == ["a", "b", "c", "d"]
    cos = np.cos(np.radians([10, 60, 90, 80]))
    assert result.scores["spearman"] == pytest.approx(100 * metrics.spearman(cos, data.scores))
    assert result.scores["pearson"] == pytest.approx(100 * metrics.pearson(cos, data.scores))
    assert result.main_score == result.scores["spearman"]
    assert result.counts.texts == 8 and result.counts.unique == 4


def test_pairs_scores_and_binary_check() -> None:
    target = TableTarget({"a": _unit(0), "b": _unit(5), "c": _unit(80), "d": _unit(30)})
    data = PairData("toy", ["a", "a", "b"], ["b", "c", "d"], np.array([1.0, 0.0, 1.0]))
    result = evaluate_pairs(target, data)
    assert result.scores["ap"] == pytest.approx(
        100.0
    )  # both positives (cos 5 and 25 deg) above the negative (80)
    assert result.scores["accuracy"] == pytest.approx(100.0)
    assert result.scores["f1"] == pytest.approx(100.0)
    assert np.cos(np.radians(80)) < result.scores["accuracy_threshold_cos"] < np.cos(np.radians(25))
    with pytest.raises(InputError, match="0 or 1"):
        evaluate_pairs(target, PairData("graded", ["a", "b"], ["b", "c"], np.array([1.0, 2.5])))


def test_code_separates_roles_and_reports_gap() -> None:
    target = TableTarget({"q1": _unit(0), "q2": _unit(90), "f1": _unit(0), "f2": _unit(60)})
    data = PairData("toy", ["q1", "q2", "q1"], ["f1", "f2", "f2"], np.array([1.0, 1.0, 0.0]))
    result = evaluate_code(target, data)
    assert ("q1", "query") in target.roles and ("f2", "document") in target.roles
    match = (1.0 + np.cos(np.radians(30))) / 2
    assert result.scores["mean_cos_match"] == pytest.approx(match)
    assert result.scores["mean_cos_nonmatch"] == pytest.approx(0.5)
    assert result.scores["cos_gap"] == pytest.approx(match - 0.5)
    assert result.scores["roc_auc"] == pytest.approx(100.0)
    assert result.prompts == {
        "query": repr(format_instruction(TASKS["code_retrieval"].instruction)),
        "document": "none",
    }


def test_retrieval_ranks_by_cosine(make_beir, tmp_path: Path) -> None:
    data = load_beir(make_beir(n_docs=10, n_queries=2))
    # query q0 (topic 0) relevant: d0 (grade 2), d5 (grade 1); make d5 the best hit, d0 third
    table = {data.queries[q]: _unit(0) for q in data.queries}
    for i, doc_id in enumerate(data.corpus):
        table[data.corpus[doc_id]] = _unit({"d5": 1, "d3": 2, "d0": 3, "d1": 4, "d6": 5}.get(doc_id, 40 + i))
    result = evaluate_retrieval(TableTarget(table), data)
    # q0: ranking d5, d3, d0 -> DCG = 1 + 2/log2(4) = 2; ideal = 2 + 1/log2(3)
    ndcg_q0 = 2 / (2 + 1 / np.log2(3))
    # q1 (topic 1) relevant: d1 (grade 1), d6 (grade 2) at ranks 4, 5 -> DCG = 1/log2(5) + 2/log2(6)
    ndcg_q1 = (1 / np.log2(5) + 2 / np.log2(6)) / (2 + 1 / np.log2(3))
    assert result.scores["ndcg@10"] == pytest.approx(100 * (ndcg_q0 + ndcg_q1) / 2)
    assert result.scores["mrr@10"] == pytest.approx(100 * (1 + 1 / 4) / 2)
    assert result.scores["p@1"] == pytest.approx(50.0)
    assert result.scores["recall@10"] == pytest.approx(100.0)
    assert result.size == 2


def test_target_stats_summary() -> None:
    stats = TargetStats()
    stats.memory.start()
    stats.record(10, 0.5)
    stats.latencies += [0.1, 0.3]
    summary = stats.summary()
    assert summary["texts_per_second"] == 20.0
    assert summary["latency_ms_p50"] == 200.0
    assert summary["peak_rss_mib"] > 1
