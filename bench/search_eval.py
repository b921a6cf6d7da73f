"""nDCG@10 of built search indexes (dense, hybrid, bm25) on cranfield_beir and on the
Kubernetes docs with Chinese titles as queries for the English pages.

    .venv/bin/python bench/search_eval.py --data ../shared/data --out /tmp/search-eval [--model minilm]

Builds (or reuses, incrementally) the indexes under OUT/data and prints one line per
dataset and mode, with wall times. The k8s set: the 312 pages with English text are
indexed (path as id, en_title as title); each page's zh_title (and, as a comparison,
en_title) is a query whose one relevant document is that page.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qembed.search.evaluate import BEIR_FIELDS, evaluate_index

from qembed.search.api import SearchIndex


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="/tmp/search-eval")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--only", choices=["cranfield", "k8s"], default=None)
    ap.add_argument("--modes", default="dense,hybrid,bm25", help="comma-separated search modes to score")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}

    from qembed import Embedder

    embedder = Embedder(args.model)

    if args.only in (None, "cranfield"):
        from qembed.eval.datasets import load_beir

        folder = data / "cranfield_beir"
        with SearchIndex.open("cranfield", embedder=embedder, data_dir=str(out / "data"), create=True) as idx:
            t = time.perf_counter()
            report = idx.index(
                [str(folder / "corpus.jsonl")],
                text_field=BEIR_FIELDS.text_field,
                id_field=BEIR_FIELDS.id_field,
                title_field=BEIR_FIELDS.title_field,
            )
            build = time.perf_counter() - t
            print(
                f"cranfield index: {report.summary()} (wall {build:.1f} s); {idx.stats().chunks} chunks",
                flush=True,
            )
            beir = load_beir(folder)
            for mode in modes:
                ev = evaluate_index(idx, beir.queries, beir.qrels, mode=mode)
                print("cranfield", ev.line(), flush=True)
                results[f"cranfield/{mode}"] = {
                    **ev.metrics,
                    "queries": ev.n_queries,
                    "seconds": ev.seconds,
                    "build_seconds": build,
                }

    if args.only in (None, "k8s"):
        src = data / "k8s_docs_en_zh" / "k8s_docs_tasks_concepts_en_zh.jsonl"
        rows = [json.loads(line) for line in src.open(encoding="utf-8")]
        pages = [r for r in rows if r["en_text"].strip()]
        jsonl = out / "k8s_en.jsonl"
        with jsonl.open("w", encoding="utf-8") as f:
            for r in pages:
                f.write(
                    json.dumps(
                        {"path": r["path"], "title": r["en_title"], "text": r["en_text"]}, ensure_ascii=False
                    )
                    + "\n"
                )
        with SearchIndex.open("k8s", embedder=embedder, data_dir=str(out / "data"), create=True) as idx:
            t = time.perf_counter()
            report = idx.index([str(jsonl)], id_field="path", title_field="title")
            build = time.perf_counter() - t
            print(
                f"k8s index: {report.summary()} (wall {build:.1f} s); {idx.stats().chunks} chunks", flush=True
            )
            qrels = {r["path"]: {r["path"]: 1} for r in pages}
            for lang in ("zh_title", "en_title"):
                queries = {r["path"]: r[lang] for r in pages}
                for mode in modes:
                    ev = evaluate_index(idx, queries, qrels, mode=mode)
                    print(f"k8s {lang}", ev.line(), flush=True)
                    results[f"k8s-{lang}/{mode}"] = {
                        **ev.metrics,
                        "queries": ev.n_queries,
                        "seconds": ev.seconds,
                        "build_seconds": build,
                    }
    (out / f"results-{'-'.join(modes)}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
