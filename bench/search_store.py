"""Embedded store at scale: insert throughput and query latency with random unit vectors.

    .venv/bin/python bench/search_store.py --n 100000 --dim 1024 --out /tmp/store-bench
    # the ANN graph (issue 16): libraries compared, then the store with its graph
    .venv/bin/python bench/search_store.py --mode libs --n 20000 --real /tmp/real.npy --embed-real ../shared/data
    .venv/bin/python bench/search_store.py --mode ann --n 100000 --real /tmp/real.npy --report bench/results/search-ann

Measures, on this machine:
- insert: ``EmbeddedStore.write`` of documents of 8 chunks in commits of 256 chunks (what
  ``qembed index`` does), vectors given (no model): chunks/s, BM25 terms and fsyncs included;
- open: a new process's first query (reading the live-row map and the vector rows, checksummed);
- dense query: p50/p95 of ``dense_search`` top-10 *including* fetching the 10 chunks' metadata,
  without and with a filter; BM25 and hybrid (dense + BM25 + RRF through ``Searcher``);
- for comparison, the same product with faiss ``IndexFlatIP`` when faiss is installed.

Random vectors make the dense timing independent of content (exact search reads every row).
Chunk texts are 60 words drawn from a 5,000-word Zipf vocabulary so BM25 has realistic
posting lists; queries are 6 mid-frequency words.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from qembed.search.documents import Chunk, chunk_id
from qembed.search.searcher import Searcher
from qembed.search.store import DocumentUpdate, Filters
from qembed.search.store.embedded import EmbeddedStore


def _texts(rng: np.random.Generator, n: int, vocab: list[str]) -> list[str]:
    ranks = np.minimum(rng.zipf(1.2, size=(n, 60)), len(vocab)) - 1
    return [" ".join(vocab[i] for i in row) for row in ranks]


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values) * 1000, p))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("store", "libs", "ann"), default="store")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--commit", type=int, default=256)
    ap.add_argument("--out", default="/tmp/store-bench")
    ap.add_argument("--libs", default="usearch-i8,usearch-f16,hnswlib,faiss-hnsw", help="--mode libs: which")
    ap.add_argument("--real", default=None, help="real-text vectors (.npy; made by --embed-real) for recall")
    ap.add_argument(
        "--embed-real", default=None, metavar="DATA", help="embed sentences of DATA (shared/data) to --real"
    )
    ap.add_argument(
        "--real-set", choices=["sts", "all"], default="sts",
        help="--embed-real: sts = 8,000 English sentences (MiniLM); all = every text of DATA (e5-small)",
    )  # fmt: skip
    ap.add_argument(
        "--real-limit", type=int, default=None,
        help="--embed-real: the first N texts (default: 8,000 for sts, every text for all)",
    )  # fmt: skip
    ap.add_argument(
        "--lift", type=int, default=None, metavar="DIM",
        help="map the --real vectors isometrically into DIM dimensions (same neighbours, DIM's cost)",
    )  # fmt: skip
    ap.add_argument("--report", default=None, help="folder for report.md + results json (--mode libs/ann)")
    ap.add_argument(
        "--exact-queries", type=int, default=None, help="queries timed on the exact scan (default --queries)"
    )
    ap.add_argument(
        "--ef", type=int, default=None, help="--mode ann: the graph's search width (default: qembed's)"
    )
    ap.add_argument(
        "--reuse", action="store_true", help="--mode ann: query the index the last run left in --out"
    )
    args = ap.parse_args()
    if args.embed_real:
        from ann_bench import embed_real

        limit = args.real_limit or (8000 if args.real_set == "sts" else 0)
        embed_real(Path(args.embed_real), Path(args.real), limit=limit, which=args.real_set)
    if args.mode != "store":
        from ann_bench import run_ann, run_libs

        (run_libs if args.mode == "libs" else run_ann)(args)
        return
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(5000)]
    store = EmbeddedStore(out / "bench", "bench")
    per_doc = 8
    langs = ["markdown", "python", "go", "text"]

    insert_seconds = 0.0
    done = 0
    while done < args.n:
        n = min(args.commit, args.n - done)
        vectors = rng.standard_normal((n, args.dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = _texts(rng, n, vocab)
        updates = []
        for start in range(0, n, per_doc):
            d = (done + start) // per_doc
            lang = langs[d % len(langs)]
            doc_id = f"/repo/{lang}/{d:06d}.x"
            chunks = [
                Chunk(chunk_id(doc_id, i), doc_id, i, f"{lang}/{d:06d}.x", f"Doc {d}", ("Section", f"s{i}"), i * 20 + 1, i * 20 + 19,
                      lang, "x", texts[start + i], f"Doc {d}", {"n": i})
                for i in range(min(per_doc, n - start))
            ]  # fmt: skip
            updates.append(
                DocumentUpdate(doc_id, f"h{d}", chunks[0].path, chunks, vectors[start : start + len(chunks)])
            )
        t = time.perf_counter()
        store.write(updates)
        insert_seconds += time.perf_counter() - t
        done += n
    print(
        f"insert: {args.n} chunks x {args.dim} dims in {insert_seconds:.1f} s = {args.n / insert_seconds:,.0f} chunks/s (commits of {args.commit})",
        flush=True,
    )
    store.close()

    t = time.perf_counter()
    store = EmbeddedStore(out / "bench", "bench", create=False)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    first = store.dense_search(queries[0], 10)
    open_seconds = time.perf_counter() - t
    assert len(first) == 10
    print(f"open + first query: {open_seconds * 1000:.0f} ms", flush=True)

    results: dict[str, dict[str, float]] = {}
    t = time.perf_counter()
    store._snapshot().vectors.ready.wait()  # the float16 copy, built in the background after the first query
    print(f"float16 copy ready after {(time.perf_counter() - t) * 1000:.0f} ms more", flush=True)

    def timed(name: str, fn) -> None:
        fn(0)  # warm
        times = []
        for i in range(args.queries):
            t = time.perf_counter()
            hits = fn(i)
            times.append(time.perf_counter() - t)
            assert len(hits), name
        results[name] = {
            "p50_ms": _pct(times, 50),
            "p95_ms": _pct(times, 95),
            "mean_ms": statistics.mean(times) * 1000,
        }
        print(
            f"{name:<28} p50 {results[name]['p50_ms']:7.1f} ms   p95 {results[name]['p95_ms']:7.1f} ms",
            flush=True,
        )

    searcher = Searcher(store)
    # Query words: mid-frequency vocabulary (ranks 50-2000), as real queries rarely consist of the
    # most common words (those are also dropped as stopwords).
    qtexts = [" ".join(vocab[j] for j in rng.integers(50, 2000, size=6)) for _ in range(args.queries)]
    timed("dense top-10 + metadata", lambda i: store.dense_search(queries[i], 10))
    exact = store._snapshot().vectors.matrix
    timed("float32 single pass, no meta", lambda i: np.argpartition(-(exact @ queries[i]), 10)[:10])
    timed("dense, filter language", lambda i: store.dense_search(queries[i], 10, Filters(language="python")))
    timed(
        "dense, filter path prefix",
        lambda i: store.dense_search(queries[i], 10, Filters(path_prefix="go/0001")),
    )
    timed("bm25 top-10 (6 terms)", lambda i: searcher.search(qtexts[i], None, k=10, mode="bm25"))
    timed(
        "hybrid top-10 (50 + 50, RRF)", lambda i: searcher.search(qtexts[i], queries[i], k=10, mode="hybrid")
    )

    # Correctness at scale: the top hit of a stored vector is itself.
    probe = store.vectors_for([h.chunk.content_hash for h in first[:1]])
    assert store.dense_search(next(iter(probe.values())), 1)[0].chunk.chunk_id == first[0].chunk.chunk_id

    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        snap = store._snapshot()
        index = faiss.IndexFlatIP(args.dim)
        index.add(np.ascontiguousarray(snap.vectors.matrix))
        times = []
        for i in range(args.queries):
            t = time.perf_counter()
            index.search(queries[i : i + 1], 10)
            times.append(time.perf_counter() - t)
        results["faiss IndexFlatIP (vectors only)"] = {"p50_ms": _pct(times, 50), "p95_ms": _pct(times, 95)}
        print(
            f"{'faiss IndexFlatIP, no meta':<28} p50 {_pct(times, 50):7.1f} ms   p95 {_pct(times, 95):7.1f} ms",
            flush=True,
        )

    sizes = {p.name: p.stat().st_size for p in (out / "bench").iterdir()}
    print(f"files: {json.dumps(sizes)}")
    (out / "results.json").write_text(
        json.dumps(
            {
                "n": args.n,
                "dim": args.dim,
                "insert_chunks_per_s": args.n / insert_seconds,
                "open_ms": open_seconds * 1000,
                "queries": results,
                "files": sizes,
            },
            indent=2,
        )
    )
    store.close()


if __name__ == "__main__":
    main()
