"""``qembed eval zh-report``: the source article's three experiments, for any list of targets.

The article compared Qwen3-Embedding-0.6B with bge-small-zh on (1) Chinese STS, (2) a
Kubernetes question over mixed Chinese/English documentation and (3) code search. This
module runs the same three experiments on public data (``../shared/data``) for every
target (in-process models and OpenAI-compatible endpoints, one at a time) and puts the
results side by side in ONE table, with latency and memory per target, plus the
article's numbers as separate rows that are labelled as its claims, never as ours.

Experiments and metrics (all on a 0-1 scale, the article's):

1. **Chinese STS** (``stsb_zh/STS-B.test.data``, 1,361 pairs): Spearman of cosine vs gold
   (the task's STS prompts, e.g. ``query: `` on both sides for E5).
2. **Kubernetes docs, zh + en** (``k8s_docs_en_zh``): the corpus holds the English AND the
   Chinese page of every topic (each page embedded as ``title + "\\n" + text[:doc_chars]``:
   the same text for every model; a model with a shorter window embeds it in windows, the
   engine's long-text default); 40 topics x 2 questions
   (Chinese, English; ``qembed.eval.k8s_queries``). Relevant: both language versions of
   each listed page. Exact cosine ranking over the whole corpus. P@1, MRR@10, nDCG@10
   (binary gains, trec_eval as in ``qembed eval retrieval``), hit@3 (share of questions
   with a relevant page in the top 3), mean rank of the first relevant page (1-based, over
   the full ranking), and **cross-lingual recall@10**: the share of questions whose top 10
   holds BOTH the English and the Chinese page of one relevant topic (reported for the
   Chinese questions in the table; the JSON also has the English ones and both).
3. **Code search**: the article's separation = mean cosine of matching minus mean cosine of
   non-matching query/code pairs on ``cosqa/cosqa-dev.json`` (604 labelled pairs), plus
   nDCG@10 on ``cosqa_retrieval/beir`` (500 test queries over 6,267 snippets).

Latency: milliseconds per text over the run (embed wall time / texts embedded; vectors
from the cache are not counted) and the p50 of ``latency_queries`` single-query calls
made after the experiments (never cached). Memory: peak RSS of this process since the
target was loaded (in process; VmHWM) or the server's RSS from its ``/metrics``
(``process_resident_memory_bytes``, qembed servers) when it has one.

``limit``/``slice``: keep rows A..B of every pair set and question list; retrieval corpora
are cut to the relevant documents of the kept questions plus ``4 x questions`` others
(for CI; the full sets are the default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qembed.common.topk import topk
from qembed.errors import InputError, QembedError
from qembed.eval import metrics
from qembed.eval.cache import VectorCache
from qembed.eval.datasets import PairData, RetrievalData, load_beir, load_pairs
from qembed.eval.encode import encode_texts
from qembed.eval.k8s_queries import ARTICLE_QUERY, TOPICS
from qembed.eval.prompts import InstructionMode, Prompting
from qembed.eval.spec import TargetSpec, make_target
from qembed.eval.targets import Target
from qembed.eval.tasks import evaluate_code, evaluate_retrieval, evaluate_sts

K8S_FILE = "k8s_docs_en_zh/k8s_docs_tasks_concepts_en_zh.jsonl"
STS_FILE = "stsb_zh/STS-B.test.data"
COSQA_FILE = "cosqa/cosqa-dev.json"
COSQA_BEIR = "cosqa_retrieval/beir"
DEFAULT_DOC_CHARS = 1200
DISTRACTORS_PER_QUERY = 4

# The source article's numbers (Qwen3-Embedding-0.6B vs bge-small-zh). Claims, not measurements.
ARTICLE_CLAIMS: tuple[dict[str, Any], ...] = (
    {"target": "Qwen3-Embedding-0.6B", "sts_spearman": 0.814, "k8s_p@1": 1.0, "code_separation": 0.251},
    {"target": "bge-small-zh", "sts_spearman": 0.782, "k8s_p@1": 0.33, "code_separation": 0.032},
)

# (key, column header, digits) of the one table, in order.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("sts_spearman", "STS-B zh Spearman", 4),
    ("k8s_p@1", "K8s P@1", 3),
    ("k8s_mrr@10", "K8s MRR@10", 3),
    ("k8s_ndcg@10", "K8s nDCG@10", 3),
    ("k8s_hit@3", "K8s hit@3", 3),
    ("k8s_mean_first_rank", "K8s mean first rank", 2),
    ("k8s_xl_recall@10_zh", "K8s zh->en+zh recall@10", 3),
    ("article_query_rank", "Pending query rank", 0),
    ("code_separation", "code separation", 4),
    ("cosqa_ndcg@10", "CoSQA nDCG@10", 3),
    ("ms_per_text", "ms/text", 1),
    ("single_query_p50_ms", "1-query p50 ms", 1),
    ("memory_mib", "memory MiB", 0),
)


@dataclass
class ReportData:
    """The three experiments' data, possibly sliced."""

    sts: PairData
    k8s: RetrievalData
    k8s_query_lang: dict[str, str]  # query id -> "zh" / "en"
    k8s_doc_page: dict[str, tuple[str, str]]  # doc id -> (page path, "en" / "zh")
    code_pairs: PairData
    code_retrieval: RetrievalData
    slice: tuple[int, int | None]
    doc_chars: int


def parse_slice(limit: int | None, slice_: str | None) -> tuple[int, int | None]:
    """``--limit N`` = rows 0..N; ``--slice A:B`` = rows A..B (B may be empty: to the end)."""
    if limit is not None and slice_ is not None:
        raise InputError("give --limit or --slice, not both.", param="slice")
    if limit is not None:
        if limit < 1:
            raise InputError("--limit must be at least 1.", param="limit")
        return 0, limit
    if slice_ is None:
        return 0, None
    start, sep, stop = slice_.partition(":")
    try:
        a = int(start) if start else 0
        b = int(stop) if stop else None
    except ValueError:
        raise InputError(f"--slice takes START:STOP (e.g. 0:50), not {slice_!r}.", param="slice") from None
    if not sep or a < 0 or (b is not None and b <= a):
        raise InputError(f"--slice takes START:STOP with 0 <= START < STOP, not {slice_!r}.", param="slice")
    return a, b


def _cut_pairs(data: PairData, rows: tuple[int, int | None]) -> PairData:
    a, b = rows
    return PairData(data.name, data.left[a:b], data.right[a:b], data.scores[a:b])


def _cut_retrieval(
    data: RetrievalData, rows: tuple[int, int | None], group: dict[str, str] | None = None
) -> RetrievalData:
    """Questions a..b; the corpus: their relevant documents plus 4 x questions others (whole
    groups: both language versions of a page stay together)."""
    if rows == (0, None):
        return data
    a, b = rows
    qids = list(data.queries)[a:b]
    if not qids:
        raise InputError(
            f"{data.name}: the slice {a}:{b} keeps no question (there are {len(data.queries)}).",
            param="slice",
        )
    group = group or {d: d for d in data.corpus}
    wanted_groups = {group[d] for q in qids for d in data.qrels.get(q, {}) if d in group}
    extra = DISTRACTORS_PER_QUERY * len(qids)
    for d in data.corpus:
        if extra <= 0:
            break
        if group[d] not in wanted_groups:
            wanted_groups.add(group[d])
            extra -= 1
    corpus = {d: t for d, t in data.corpus.items() if group[d] in wanted_groups}
    return RetrievalData(
        data.name,
        corpus,
        {q: data.queries[q] for q in qids},
        {q: data.qrels[q] for q in qids if q in data.qrels},
        [*data.notes, f"sliced: questions {a}:{b}, {len(corpus)} of the corpus documents"],
    )


def load_k8s(
    path: Path, doc_chars: int = DEFAULT_DOC_CHARS
) -> tuple[RetrievalData, dict[str, str], dict[str, tuple[str, str]]]:
    """The mixed zh/en Kubernetes retrieval set: both pages of every topic, 80 questions."""
    if not path.is_file():
        raise InputError(
            f"{path} is missing: the Kubernetes docs pairs (k8s_docs_en_zh) are needed.", param="data"
        )
    if doc_chars < 1:
        raise InputError("doc_chars must be at least 1.", param="doc_chars")
    corpus: dict[str, str] = {}
    pages: dict[str, tuple[str, str]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                page = row["path"]
                sides = {"en": (row["en_title"], row["en_text"]), "zh": (row["zh_title"], row["zh_text"])}
            except (ValueError, KeyError) as exc:
                raise InputError(f"{path}:{line_no}: not a k8s page pair ({exc}).", param="data") from None
            for lang, (title, text) in sides.items():
                body = f"{title}\n{text[:doc_chars]}".strip()
                if body:
                    doc_id = f"{lang}:{page}"
                    corpus[doc_id] = body
                    pages[doc_id] = (page, lang)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    langs: dict[str, str] = {}
    for topic, zh, en, relevant in TOPICS:
        missing = [p for p in relevant if f"en:{p}" not in corpus or f"zh:{p}" not in corpus]
        if missing:
            raise InputError(
                f"{path} lacks the page(s) {missing} that question {topic!r} needs.", param="data"
            )
        for lang, text in (("zh", zh), ("en", en)):
            qid = f"{topic}-{lang}"
            queries[qid] = text
            langs[qid] = lang
            qrels[qid] = {f"{side}:{p}": 1 for p in relevant for side in ("en", "zh")}
    return RetrievalData("k8s_docs_en_zh", corpus, queries, qrels), langs, pages


def load_report_data(
    data_dir: str | Path,
    *,
    limit: int | None = None,
    slice_: str | None = None,
    doc_chars: int = DEFAULT_DOC_CHARS,
) -> ReportData:
    """Read (and slice) the four data sets under ``data_dir`` (the layout of ../shared/data)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(
            f"{root} is not a folder; give --data the folder that holds stsb_zh/, k8s_docs_en_zh/, cosqa/, cosqa_retrieval/.",
            param="data",
        )
    rows = parse_slice(limit, slice_)
    k8s, langs, pages = load_k8s(root / K8S_FILE, doc_chars)
    k8s = _cut_retrieval(k8s, rows, {d: p for d, (p, _) in pages.items()})
    return ReportData(
        sts=_cut_pairs(load_pairs(root / STS_FILE), rows),
        k8s=k8s,
        k8s_query_lang={q: langs[q] for q in k8s.queries},
        k8s_doc_page={d: pages[d] for d in k8s.corpus},
        code_pairs=_cut_pairs(load_pairs(root / COSQA_FILE), rows),
        code_retrieval=_cut_retrieval(load_beir(root / COSQA_BEIR, split="test", use_title=False), rows),
        slice=rows,
        doc_chars=doc_chars,
    )


def k8s_metrics(
    q: np.ndarray,
    d: np.ndarray,
    data: RetrievalData,
    query_lang: dict[str, str],
    doc_page: dict[str, tuple[str, str]],
) -> dict[str, Any]:
    """Every K8s metric of the report from normalized query/document vectors (full ranking)."""
    query_ids, doc_ids = list(data.queries), list(data.corpus)
    order, _ = topk(q @ d.T, len(doc_ids))  # the full ranking; equal scores rank by corpus order
    run = {qid: [doc_ids[j] for j in row[:10]] for qid, row in zip(query_ids, order, strict=True)}
    trec = metrics.retrieval_metrics(run, data.qrels, ndcg=(10,), mrr=(10,), precision=(1,)).metrics
    first_rank, hit3, xl = {}, {}, {}
    for qid, row in zip(query_ids, order, strict=True):
        relevant = data.qrels[qid]
        ranked = [doc_ids[j] for j in row]
        first_rank[qid] = next(i for i, doc in enumerate(ranked, 1) if doc in relevant)
        hit3[qid] = any(doc in relevant for doc in ranked[:3])
        found: dict[str, set[str]] = {}
        for doc in ranked[:10]:
            if doc in relevant:
                page, lang = doc_page[doc]
                found.setdefault(page, set()).add(lang)
        xl[qid] = any(langs == {"en", "zh"} for langs in found.values())

    def mean(values: dict[str, Any], lang: str | None = None) -> float | None:
        picked = [float(v) for k, v in values.items() if lang is None or query_lang[k] == lang]
        return float(np.mean(picked)) if picked else None

    article = "pending-pod-zh" if "pending-pod-zh" in data.queries else None
    return {
        "k8s_p@1": trec["p@1"],
        "k8s_mrr@10": trec["mrr@10"],
        "k8s_ndcg@10": trec["ndcg@10"],
        "k8s_hit@3": mean(hit3),
        "k8s_mean_first_rank": mean(first_rank),
        "k8s_xl_recall@10_zh": mean(xl, "zh"),
        "k8s_xl_recall@10_en": mean(xl, "en"),
        "k8s_xl_recall@10": mean(xl),
        "k8s_p@1_zh_questions": mean({k: first_rank[k] == 1 for k in first_rank}, "zh"),
        "k8s_p@1_en_questions": mean({k: first_rank[k] == 1 for k in first_rank}, "en"),
        "article_query_rank": first_rank.get(article) if article else None,
        "k8s_questions": len(query_ids),
        "k8s_documents": len(doc_ids),
    }


@dataclass
class TargetReport:
    """One target's row: scores, speed, memory, what it was, what went wrong."""

    name: str
    kind: str
    scores: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, dict[str, str]] = field(default_factory=dict)
    performance: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            **self.scores,
            **{k: self.performance.get(k) for k in ("ms_per_text", "single_query_p50_ms", "memory_mib")},
        }


def _latency_probe(target: Target, texts: Sequence[str], mode: InstructionMode = "client") -> dict[str, Any]:
    """Single-query latency: one text per call, never from a cache, after one warm-up call."""
    if not texts:
        return {}
    prompting = Prompting("retrieval", mode=mode)
    target.embed([texts[0]], prompting, "query")
    times = []
    for text in texts:
        t0 = time.perf_counter()
        target.embed([text], prompting, "query")
        times.append((time.perf_counter() - t0) * 1000.0)
    return {
        "single_query_p50_ms": float(np.percentile(times, 50)),
        "single_query_p95_ms": float(np.percentile(times, 95)),
        "single_query_calls": len(times),
    }


@dataclass
class ReportTarget:
    """A target of the report and how prompts reach it (``client``/``server``/``none``, see Prompting)."""

    spec: Any  # TargetSpec, a ready Target or an Embedder
    mode: InstructionMode = "client"


def run_target(
    target: Target,
    data: ReportData,
    *,
    cache: VectorCache | None = None,
    progress: Any = None,
    latency_queries: int = 20,
    mode: InstructionMode = "client",
) -> TargetReport:
    """The three experiments on one (open) target."""
    t0 = time.perf_counter()
    kind = "in-process" if target.identity().get("kind") == "in-process" else "http"
    report = TargetReport(target.name, kind, identity=target.identity())
    report.identity["instruction_mode"] = mode
    if isinstance(getattr(target, "prompt_family", None), str) and kind == "http":
        report.identity["prompt_family"] = f"{target.prompt_family} ({getattr(target, 'family_source', '')})"  # type: ignore[attr-defined]
    sts = evaluate_sts(
        target, data.sts, prompting=Prompting("sts", mode=mode), cache=cache, progress=progress
    )
    report.scores["sts_spearman"] = sts.scores["spearman"] / 100.0
    report.prompts["sts"] = sts.prompts

    prompting = Prompting("retrieval", mode=mode)
    query_ids, doc_ids = list(data.k8s.queries), list(data.k8s.corpus)
    q, _ = encode_texts(
        target,
        [data.k8s.queries[i] for i in query_ids],
        prompting,
        "query",
        cache=cache,
        progress=progress,
        label="k8s questions",
    )
    d, _ = encode_texts(
        target,
        [data.k8s.corpus[i] for i in doc_ids],
        prompting,
        "document",
        cache=cache,
        progress=progress,
        label="k8s pages",
    )
    report.scores.update(k8s_metrics(q, d, data.k8s, data.k8s_query_lang, data.k8s_doc_page))
    report.prompts["k8s"] = {
        "query": target.prompt_description(prompting, "query"),
        "document": target.prompt_description(prompting, "document"),
    }

    code = evaluate_code(
        target,
        data.code_pairs,
        prompting=Prompting("code_retrieval", mode=mode),
        cache=cache,
        progress=progress,
    )
    report.scores["code_separation"] = code.scores["cos_gap"]
    report.scores["code_mean_cos_match"] = code.scores["mean_cos_match"]
    report.scores["code_mean_cos_nonmatch"] = code.scores["mean_cos_nonmatch"]
    report.scores["code_roc_auc"] = code.scores["roc_auc"] / 100.0
    report.prompts["code"] = code.prompts
    ret = evaluate_retrieval(
        target,
        data.code_retrieval,
        prompting=Prompting("code_retrieval", mode=mode),
        cache=cache,
        progress=progress,
    )
    report.scores.update({f"cosqa_{k}": v / 100.0 for k, v in ret.scores.items()})

    stats = target.stats.summary()
    texts, seconds = stats["texts_embedded"], stats["embed_seconds"]
    perf: dict[str, Any] = {
        "ms_per_text": 1000.0 * seconds / texts if texts else None,
        "texts_embedded": texts,
        "embed_seconds": seconds,
        "load_seconds": stats["load_seconds"],
    }
    probe = [t for _, zh, en, _ in TOPICS for t in (zh, en)][:latency_queries]
    perf.update(
        _latency_probe(target, [f"{t} ({i})" for i, t in enumerate(probe)], mode)
    )  # fresh texts: no server cache hit
    stats = target.stats.summary()
    if kind == "in-process":
        perf["memory_mib"], perf["memory_kind"] = (
            stats["peak_rss_mib"],
            f"peak RSS of this process ({stats['peak_rss_method']})",
        )
    else:
        perf["memory_mib"] = stats["server_rss_mib"]
        perf["memory_kind"] = (
            "server RSS from /metrics" if stats["server_rss_mib"] is not None else "unknown (no /metrics RSS)"
        )
    perf["peak_cuda_mib"] = stats["peak_cuda_mib"]
    report.performance = perf
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class ZhReport:
    """Every target's row, the article's claims, and how it was made."""

    targets: list[TargetReport]
    data: dict[str, Any]
    meta: dict[str, Any]
    claims: tuple[dict[str, Any], ...] = ARTICLE_CLAIMS

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "data": self.data,
            "columns": [{"key": k, "header": h} for k, h, _ in COLUMNS],
            "targets": [t.__dict__ for t in self.targets],
            "article_claims": {
                "note": "numbers the source article reports; NOT measured by qembed",
                "rows": list(self.claims),
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)

    def table_rows(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(label, source, values): our measurements first, then the article's claims."""
        rows = [
            (t.name, "measured" if t.error is None else f"failed: {t.error}", t.row()) for t in self.targets
        ]
        rows += [
            (f"article's claim: {c['target']}", "the article's claim, not measured here", c)
            for c in self.claims
        ]
        return rows

    def to_markdown(self) -> str:
        def fmt(value: Any, digits: int) -> str:
            if value is None:
                return "-"
            if isinstance(value, float):
                return f"{value:.{digits}f}" if digits else f"{value:.0f}"
            return str(value)

        header = ["target", "source", *[h for _, h, _ in COLUMNS]]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for label, source, values in self.table_rows():
            cells = [label, source, *[fmt(values.get(k), digits) for k, _, digits in COLUMNS]]
            lines.append("| " + " | ".join(cells) + " |")
        m, d = self.meta, self.data
        notes = [
            f"Command: `{m['command']}`",
            f"Machine: {m['machine']}; date {m['date']}.",
            f"Data: {d['sts']} STS-B zh pairs; {d['k8s_questions']} Kubernetes questions (zh+en) over {d['k8s_documents']} pages "
            f"(title + first {d['doc_chars']} characters); {d['code_pairs']} CoSQA pairs; {d['cosqa_queries']} CoSQA retrieval "
            f"queries over {d['cosqa_documents']} snippets{'; SLICED: ' + d['slice'] if d['slice'] else ''}.",
            "Scores are 0-1 (the article's scale). hit@3: share of questions with a relevant page in the top 3; mean first "
            "rank: 1-based rank of the first relevant page; zh->en+zh recall@10: share of Chinese questions whose top 10 "
            "holds both the English and the Chinese page of a relevant topic; Pending query rank: rank of the first relevant "
            f"page for the article's question {ARTICLE_QUERY!r}; code separation: mean cosine of matching minus "
            "non-matching CoSQA pairs.",
            "ms/text: embed wall time per text over the run; 1-query p50: median of single-text calls; memory: peak RSS "
            "(in process) or the server's RSS from /metrics.",
            'Rows labelled "article\'s claim" are the numbers the source article reports for the real models, copied '
            "for comparison; qembed did not measure them.",
        ]
        for t in self.targets:
            prompts = "; ".join(
                f"{task}: " + ", ".join(f"{side} {p}" for side, p in sides.items())
                for task, sides in t.prompts.items()
            )
            notes.append(
                f"{t.name} ({t.kind}): {t.performance.get('memory_kind', '')}; prompts: {prompts or '-'}"
            )
        return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


PLOT_METRICS: tuple[tuple[str, str], ...] = (
    ("sts_spearman", "STS-B zh Spearman"),
    ("k8s_p@1", "K8s P@1"),
    ("k8s_ndcg@10", "K8s nDCG@10"),
    ("k8s_xl_recall@10_zh", "K8s zh->en+zh recall@10"),
    ("code_separation", "code separation"),
    ("cosqa_ndcg@10", "CoSQA nDCG@10"),
)


def write_plot(report: ZhReport, path: Path) -> Path | None:
    """One panel per metric: measured targets as solid bars, the article's claims hatched."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = report.table_rows()
    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(3.2 * len(PLOT_METRICS), 4.2))
    for ax, (key, title) in zip(axes, PLOT_METRICS, strict=True):
        n_claims = 0
        for i, (label, source, values) in enumerate(rows):
            value = values.get(key)
            claim = source.startswith("the article")
            n_claims += claim
            ax.bar(
                i,
                value if isinstance(value, int | float) else 0.0,
                color=("#dddddd", "#aaaaaa")[n_claims % 2] if claim else f"C{i}",
                hatch=("//", "\\\\")[n_claims % 2] if claim else None,
                edgecolor="black",
                label=label,
            )
            if value is None:
                ax.text(i, 0.01, "n/a", ha="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(rows), 3), fontsize=8)
    fig.suptitle(
        f"qembed eval zh-report ({report.meta['date']}); hatched = the article's claims, not measured",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_report(
    targets: Sequence[Any],
    data: ReportData,
    *,
    cache: VectorCache | None = None,
    progress: Any = None,
    latency_queries: int = 20,
    meta: dict[str, Any] | None = None,
) -> ZhReport:
    """Every target in turn (built, run, closed: one model in memory at a time); a failing
    target is reported and the others still run."""
    reports = []
    for item in targets:
        spec, mode = (item.spec, item.mode) if isinstance(item, ReportTarget) else (item, "client")
        name = (
            getattr(spec, "name", None)
            or getattr(spec, "model", None)
            or getattr(spec, "endpoint", None)
            or repr(spec)
        )
        built = spec is None or isinstance(spec, TargetSpec)
        try:
            target = make_target(spec)
        except QembedError as exc:
            reports.append(TargetReport(str(name), "unknown", error=exc.message))
            continue
        try:
            reports.append(
                run_target(
                    target, data, cache=cache, progress=progress, latency_queries=latency_queries, mode=mode
                )
            )
        except QembedError as exc:
            reports.append(TargetReport(target.name, "unknown", error=exc.message))
        finally:
            if built:
                target.close()
    info = {
        "sts": len(data.sts),
        "k8s_questions": len(data.k8s.queries),
        "k8s_documents": len(data.k8s.corpus),
        "code_pairs": len(data.code_pairs),
        "cosqa_queries": len(data.code_retrieval.queries),
        "cosqa_documents": len(data.code_retrieval.corpus),
        "doc_chars": data.doc_chars,
        "slice": ""
        if data.slice == (0, None)
        else f"{data.slice[0]}:{'' if data.slice[1] is None else data.slice[1]}",
    }
    base_meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": "", "machine": ""}
    return ZhReport(reports, info, {**base_meta, **(meta or {})})


def write_report(report: ZhReport, out: Path) -> dict[str, Path]:
    """report.json, report.md and report.png in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(report.to_json() + "\n", encoding="utf-8")
    paths["markdown"].write_text(report.to_markdown(), encoding="utf-8")
    plot = write_plot(report, out / "report.png")
    if plot is not None:
        paths["plot"] = plot
    return paths
