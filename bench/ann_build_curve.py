"""How the embedded store's HNSW graph builds as it grows, and what it answers at the size reached.

    .venv/bin/python bench/ann_build_curve.py --n 1000000 --dim 1024 --minutes 20 [--out FILE.json]

Feeds random unit vectors to ``AnnIndex`` (qembed's graph: usearch, int8 copy, the shipped
``CONNECTIVITY`` / ``EXPANSION_ADD``) in steps of ``--step`` rows and prints each step's
rows/s and the process RSS, so the build time of a size out of reach can be read off the
curve instead of guessed. It stops at ``--n`` rows or after ``--minutes``, then times
``--queries`` top-10 searches through the graph (candidates re-scored exactly, as the store
does) against the exact float32 scan of the same rows, and reports recall@10.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
from ann_bench import _unit  # the same random unit rows as search_store.py's runs


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    from qembed.search.store import ann as ann_module
    from qembed.search.store.ann import AnnIndex

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--step", type=int, default=32_768)
    parser.add_argument("--minutes", type=float, default=20.0, help="stop adding after this long")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--ef", type=int, default=None, help="search width (default: qembed's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    rows = np.empty((args.n, args.dim), dtype=np.float32)
    ann = AnnIndex("bench", args.dim)
    curve, start, done = [], time.perf_counter(), 0
    while done < args.n and time.perf_counter() - start < args.minutes * 60:
        m = min(args.step, args.n - done)
        rows[done : done + m] = _unit(np.random.default_rng(1000 + done), m, args.dim)
        t = time.perf_counter()
        ann.add(done, rows[done : done + m])
        rate = m / (time.perf_counter() - t)
        done += m
        curve.append({"rows": done, "rows_per_s": round(rate, 1), "rss_mb": round(_rss_mb(), 1)})
        print(json.dumps(curve[-1]), flush=True)
    build_s = time.perf_counter() - start
    have = rows[:done]
    q = _unit(np.random.default_rng(7), args.queries, args.dim)
    ef = args.ef or ann_module.EXPANSION_SEARCH
    graph_ms, exact_ms, recall = [], [], []
    for qi in q:
        t = time.perf_counter()
        cand = ann.search(qi, 10 * ann_module.FETCH, ef=ef)
        top = cand[np.argsort(-(have[cand] @ qi))[:10]]
        graph_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        exact = np.argpartition(-(have @ qi), 10)[:10]
        exact_ms.append((time.perf_counter() - t) * 1000)
        recall.append(len(set(top.tolist()) & set(exact.tolist())) / 10)
    result = {
        "dim": args.dim,
        "rows_built": done,
        "build_s": round(build_s, 1),
        "connectivity": ann_module.CONNECTIVITY,
        "expansion_add": ann_module.EXPANSION_ADD,
        "ef": ef,
        "graph_memory_mb": round(ann.memory_bytes() / 2**20, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "recall@10": round(float(np.mean(recall)), 4),
        "graph_p50_ms": round(float(np.median(graph_ms)), 2),
        "exact_scan_p50_ms": round(float(np.median(exact_ms)), 2),
        "load_average_at_end": os.getloadavg(),
        "curve": curve,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
