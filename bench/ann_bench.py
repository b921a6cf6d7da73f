"""The ANN modes of ``bench/search_store.py`` (issue 16): which library, and the store with it.

``--mode libs``: usearch (int8 / float16 copies of the vectors), hnswlib and faiss HNSW
built over the same random unit vectors (and the real-text set): build time (= insert
throughput), memory, recall@10 against the exact top 10 and p50 latency at a few search
widths, each candidate list re-scored with the float32 rows as the store does.

``--mode ann``: ``EmbeddedStore`` with its graph: insert throughput through ``write``
(SQLite, BM25 terms, fsync, the graph caught up in the background) plus the rest of the
graph build at close, open + first query with the sidecar, dense top-10 p50/p95 through the
graph and through the exact scan, recall@10 of one against the other, a filter, hybrid,
process RSS and file sizes; then the same recall and latency on real-text vectors.

Real text: ``--embed-real DATA`` embeds the STS-B sentences and Cranfield abstract
sentences of the shared data folder with all-MiniLM-L6-v2 (384 dims) into ``--real``;
``--real-set all`` embeds every distinct text there (~200k, mostly Chinese) with the
multilingual e5-small instead. ``--lift DIM`` maps real vectors isometrically into DIM
dimensions (a random matrix with orthonormal columns: every inner product, so every
neighbour list, stays exactly as it was) to time the graph at the served model's width.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from qembed.search.documents import Chunk, chunk_id
from qembed.search.searcher import Searcher
from qembed.search.store import DocumentUpdate, Filters
from qembed.search.store import ann as ann_module
from qembed.search.store.embedded import EmbeddedStore


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _ms(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values) * 1000, p))


def real_sentences(data: Path) -> list[str]:
    """STS-B pairs, then Cranfield abstracts cut at sentence ends (English, ~25k)."""
    lines = (
        gzip.open(data / "stsb_en" / "stsbenchmark.tsv.gz", "rt", encoding="utf-8").read().splitlines()[1:]
    )
    sents = [s for line in lines for s in line.split("\t")[6:8]]
    for line in (data / "cranfield_beir" / "corpus.jsonl").open(encoding="utf-8"):
        sents += [s.strip() for s in json.loads(line)["text"].split(" .") if len(s.strip()) > 20]
    return list(dict.fromkeys(s for s in sents if s))


def real_texts_all(data: Path) -> list[str]:
    """Every distinct text of the shared data folder (~208k, three quarters Chinese): the Chinese pair
    sets' sentences, the English sentences above, the CoSQA code snippets and queries, and
    the Kubernetes pages (English and Chinese) cut at blank lines."""
    texts: list[str] = []
    for f in sorted(data.glob("*_zh/*.data")):
        for line in f.open(encoding="utf-8"):
            texts += line.rstrip("\n").split("\t")[:2]
    texts += real_sentences(data)
    beir = data / "cosqa_retrieval" / "beir"
    for name in ("corpus.jsonl", "queries.jsonl"):
        if (beir / name).exists():
            texts += [json.loads(line)["text"] for line in (beir / name).open(encoding="utf-8")]
    for line in (data / "k8s_docs_en_zh" / "k8s_docs_tasks_concepts_en_zh.jsonl").open(encoding="utf-8"):
        page = json.loads(line)
        for text in (page["en_text"], page["zh_text"]):
            texts += [p.strip() for p in text.split("\n\n") if len(p.strip()) > 30]
    return list(dict.fromkeys(t for t in texts if t.strip()))


def embed_real(data: Path, out: Path, limit: int = 8000, which: str = "sts") -> None:
    """Embed real texts into ``out`` (.npy): ``sts`` = up to ``limit`` English sentences with
    MiniLM; ``all`` = the first ``limit`` (0: every) distinct texts of the data folder with
    the multilingual e5-small (as documents), in parts saved as they finish so a stopped run
    resumes (the long Kubernetes paragraphs come last: ~75 texts/s before them, ~17 among them)."""
    from qembed import Embedder
    from qembed.model.sources import resolve_model

    if which == "sts":
        sents = real_sentences(data)[:limit]
        t = time.perf_counter()
        vectors = Embedder(str(resolve_model("minilm").path), device="cpu").encode(sents)
        print(f"embedded {len(sents)} sentences in {time.perf_counter() - t:.0f} s", flush=True)
        np.save(out, np.asarray(vectors, dtype=np.float32))
        return
    texts = real_texts_all(data)[: limit if limit > 0 else None]
    print(f"{len(texts):,} distinct texts to embed with e5-small", flush=True)
    embedder = Embedder(str(resolve_model("e5-small").path), device="cpu")
    parts = out.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    step = 10_000
    t = time.perf_counter()
    done_now = 0
    for start in range(0, len(texts), step):
        part = parts / f"{start:07d}.npy"
        chunk = texts[start : start + step]
        if part.exists() and len(np.load(part, mmap_mode="r")) == len(chunk):
            continue  # done by an earlier run (a shorter last part of another --real-limit is redone)
        np.save(part, embedder.encode(chunk, input_type="document").astype(np.float32))
        done_now += len(chunk)
        rate = done_now / (time.perf_counter() - t)
        left = (len(texts) - start - len(chunk)) / rate
        print(
            f"  {start + len(chunk):,}/{len(texts):,} texts, {rate:.0f}/s, ETA {left / 60:.0f} min",
            flush=True,
        )
    vectors = np.concatenate([np.load(parts / f"{s:07d}.npy") for s in range(0, len(texts), step)])
    np.save(out, vectors)
    out.with_suffix(".json").write_text(json.dumps({"model": "multilingual-e5-small", "texts": len(texts)}))
    print(f"embedded {len(texts):,} texts -> {out} {vectors.shape}", flush=True)


def _real(path: str | None, n_queries: int, lift: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    if not path:
        return None
    v = np.load(path).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if lift and lift > v.shape[1]:
        # Q has orthonormal columns, so (x @ Q.T) . (y @ Q.T) = x . y for every pair
        q, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((lift, v.shape[1])))
        lifted = np.ascontiguousarray(v @ q.T.astype(np.float32))
        lifted /= np.linalg.norm(lifted, axis=1, keepdims=True)  # only float32 rounding to undo
        sample = slice(0, min(len(v), 2000))
        drift = np.abs(lifted[sample] @ lifted[sample].T - v[sample] @ v[sample].T).max()
        assert drift < 1e-4, f"the lift changed inner products by {drift}"
        v = lifted
    order = np.random.default_rng(1).permutation(len(v))
    return np.ascontiguousarray(v[order[n_queries:]]), np.ascontiguousarray(v[order[:n_queries]])


def _real_label(path: str, x: np.ndarray) -> str:
    meta = Path(path).with_suffix(".json")
    model = json.loads(meta.read_text())["model"] if meta.exists() else "MiniLM"
    source_dim = np.load(path, mmap_mode="r").shape[1]
    lifted = f", lifted from {source_dim}" if x.shape[1] != source_dim else ""
    return f"real text {len(x)} x {x.shape[1]} ({model}{lifted})"


def _truth(x: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    out = []
    for i in range(0, len(q), 64):
        s = q[i : i + 64] @ x.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1)
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


# -- --mode libs -------------------------------------------------------------------------------
SETTINGS = [(10, 64), (40, 128), (40, 256), (100, 256)]  # (candidates fetched, search width ef)


def _build_lib(which: str, x: np.ndarray) -> tuple[Any, Any]:
    n, dim = x.shape
    if which.startswith("usearch"):
        from usearch.index import Index

        ix = Index(ndim=dim, metric="ip", dtype=which.split("-")[1], connectivity=16, expansion_add=128)
        ix.add(np.arange(n), x, threads=os.cpu_count() or 1)

        def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
            ix.expansion_search = ef
            return np.asarray(ix.search(q, k).keys, dtype=np.int64)

        return ix, search
    if which == "hnswlib":
        import hnswlib

        ix = hnswlib.Index(space="ip", dim=dim)
        ix.init_index(max_elements=n, M=16, ef_construction=128)
        ix.add_items(x, np.arange(n))

        def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
            ix.set_ef(max(ef, k))
            return np.asarray(ix.knn_query(q, k)[0][0], dtype=np.int64)

        return ix, search
    if which == "faiss-hnsw":
        import faiss

        ix = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = 128
        ix.add(x)

        def search(q: np.ndarray, k: int, ef: int) -> np.ndarray:
            ix.hnsw.efSearch = max(ef, k)
            return np.asarray(ix.search(q[None], k)[1][0], dtype=np.int64)

        return ix, search
    raise SystemExit(f"unknown library {which}")


def _libs_on(x: np.ndarray, q: np.ndarray, libs: list[str], label: str) -> dict[str, Any]:
    truth = _truth(x, q)
    out: dict[str, Any] = {}
    for which in libs:
        rss0 = _rss_mb()
        t = time.perf_counter()
        ix, search = _build_lib(which, x)
        build = time.perf_counter() - t
        res: dict[str, Any] = {
            "build_s": build,
            "adds_per_s": len(x) / build,
            "rss_growth_mb": _rss_mb() - rss0,
            "settings": {},
        }
        for fetch, ef in SETTINGS:
            found, times = [], []
            for i, qq in enumerate(q):
                t = time.perf_counter()
                c = search(qq, fetch, ef)
                c = c[c >= 0]
                best = c[np.argsort(-(x[c] @ qq))[:10]]
                times.append(time.perf_counter() - t)
                found.append(len(set(best.tolist()) & set(truth[i].tolist())) / 10)
            res["settings"][f"fetch {fetch}, ef {ef}"] = {
                "recall@10": float(np.mean(found)),
                "p50_ms": _ms(times, 50),
            }
        out[which] = res
        print(f"[{label}] {which}: {json.dumps(res)}", flush=True)
        del ix, search
    return out


def run_libs(args: Any) -> None:
    libs = args.libs.split(",")
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"machine": _machine()}
    x = _unit(rng, args.n, args.dim)
    results[f"random {args.n} x {args.dim}"] = _libs_on(x, _unit(rng, args.queries, args.dim), libs, "random")
    del x
    real = _real(args.real, args.queries, args.lift)
    if real is not None:
        results[_real_label(args.real, real[0])] = _libs_on(*real, libs, "real")
    _write_report(args.report, "libs", results)


# -- --mode ann --------------------------------------------------------------------------------
def _fill(store: EmbeddedStore, vectors_of: Any, n: int, commit: int, rng: np.random.Generator) -> float:
    """Write n chunks (documents of 8) in commits of ``commit``; seconds spent in ``write``."""
    vocab = [f"w{i}" for i in range(5000)]
    langs = ["markdown", "python", "go", "text"]
    seconds, done = 0.0, 0
    while done < n:
        m = min(commit, n - done)
        vectors = vectors_of(done, m)
        ranks = np.minimum(rng.zipf(1.2, size=(m, 30)), len(vocab)) - 1
        texts = [" ".join(vocab[i] for i in row) for row in ranks]
        updates = []
        for start in range(0, m, 8):
            d = (done + start) // 8
            lang = langs[d % 4]
            doc_id = f"/repo/{lang}/{d:07d}.x"
            chunks = [
                Chunk(chunk_id(doc_id, i), doc_id, i, f"{lang}/{d:07d}.x", f"Doc {d}", ("S",), 1, 2, lang, "x",
                      texts[start + i], "", {})
                for i in range(min(8, m - start))
            ]  # fmt: skip
            updates.append(
                DocumentUpdate(doc_id, f"h{d}", chunks[0].path, chunks, vectors[start : start + len(chunks)])
            )
        t = time.perf_counter()
        store.write(updates)
        seconds += time.perf_counter() - t
        done += m
    return seconds


def _timed(fn: Any, n: int) -> tuple[dict[str, float], list[Any]]:
    fn(0)
    times, outs = [], []
    for i in range(n):
        t = time.perf_counter()
        outs.append(fn(i))
        times.append(time.perf_counter() - t)
    return {
        "p50_ms": _ms(times, 50),
        "p95_ms": _ms(times, 95),
        "mean_ms": statistics.mean(times) * 1000,
    }, outs


def _recall(a: list[list[Any]], b: list[list[Any]]) -> float:
    return float(
        np.mean(
            [
                len({h.chunk.chunk_id for h in x} & {h.chunk.chunk_id for h in y}) / max(len(y), 1)
                for x, y in zip(a, b, strict=False)
            ]
        )
    )


def _store_run(
    folder: Path, vectors_of: Any, n: int, dim: int, q: np.ndarray, args: Any, label: str
) -> dict[str, Any]:
    if args.ef:
        ann_module.EXPANSION_SEARCH = args.ef
    write_s = close_s = float("nan")
    if not (args.reuse and (folder / "ann.json").exists()):  # --reuse: time queries on the last run's index
        shutil.rmtree(folder, ignore_errors=True)
        rng = np.random.default_rng(2)
        store = EmbeddedStore(folder, "bench", ann="on")
        write_s = _fill(store, vectors_of, n, args.commit, rng)
        print(
            f"[{label}] write {n / write_s:,.0f} chunks/s ({write_s:.1f} s); graph rows so far {store.ann.describe()['rows']}",
            flush=True,
        )
        t = time.perf_counter()
        store.close()  # a writer's close catches the graph up and saves the sidecar
        close_s = time.perf_counter() - t
        print(
            f"[{label}] write {n / write_s:,.0f} chunks/s ({write_s:.1f} s), close (graph catch-up + save) {close_s:.1f} s",
            flush=True,
        )
    rss0 = _rss_mb()
    t = time.perf_counter()
    store = EmbeddedStore(folder, "bench", ann="on")
    first = store.dense_search(q[0], 10)
    open_s = time.perf_counter() - t
    assert len(first) == 10 and store.ann.why == "sidecar loaded", store.ann.why
    res: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "ef": ann_module.EXPANSION_SEARCH,
        "candidates_per_result": ann_module.FETCH,
        "insert_chunks_per_s_write": n / write_s,
        "write_s": write_s,
        "close_graph_s": close_s,
        "insert_chunks_per_s_with_graph": n / (write_s + close_s),
        "open_first_query_ms": open_s * 1000,
        "rss_after_open_mb": _rss_mb(),
        "rss_growth_open_mb": _rss_mb() - rss0,
        "graph_memory_mb": store.ann.ann.memory_bytes() / 2**20 if store.ann.ann else None,
        "files_mb": {p.name: p.stat().st_size / 2**20 for p in folder.iterdir() if p.is_file()},
        "queries": {},
    }
    nq = len(q)
    ne = min(nq, args.exact_queries or nq)
    res["queries"]["dense top-10 (graph) + metadata"], ann_hits = _timed(
        lambda i: store.dense_search(q[i], 10), nq
    )
    res["queries"]["dense top-10 (exact scan) + metadata"], exact_hits = _timed(
        lambda i: store.dense_search(q[i], 10, exact=True), ne
    )
    res["recall@10_vs_exact"] = _recall(ann_hits[:ne], exact_hits)
    lang = Filters(language="python")
    res["queries"]["dense, filter language 1/4 (graph)"], f_hits = _timed(
        lambda i: store.dense_search(q[i], 10, lang), nq
    )
    _, fe_hits = _timed(lambda i: store.dense_search(q[i], 10, lang, exact=True), min(ne, 20))
    res["recall@10_filtered_vs_exact"] = _recall(f_hits[: len(fe_hits)], fe_hits)
    searcher = Searcher(store)
    res["queries"]["hybrid top-10 (dense 50 + bm25 50)"], _ = _timed(
        lambda i: searcher.search("w60 w61 w300 w900", q[i], k=10, mode="hybrid"), min(nq, 50)
    )
    res["ann"] = store.ann.describe()
    for name, r in res["queries"].items():
        print(f"[{label}] {name:<40} p50 {r['p50_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms", flush=True)
    print(
        f"[{label}] recall@10 {res['recall@10_vs_exact']:.4f} (filtered {res['recall@10_filtered_vs_exact']:.4f}), RSS {res['rss_after_open_mb']:.0f} MB",
        flush=True,
    )
    store.close()
    return res


def run_ann(args: Any) -> None:
    results: dict[str, Any] = {"machine": _machine()}
    out = Path(args.out)
    rng = np.random.default_rng(0)
    q = _unit(rng, args.queries, args.dim)

    def random_rows(start: int, m: int) -> np.ndarray:
        return _unit(np.random.default_rng(1000 + start), m, args.dim)

    if args.n > 0:  # --n 0: the real-text set only
        results[f"random {args.n} x {args.dim}"] = _store_run(
            out / "random", random_rows, args.n, args.dim, q, args, "random"
        )
    real = _real(args.real, args.queries, args.lift)
    if real is not None:
        x, rq = real
        results[_real_label(args.real, x)] = _store_run(
            out / "real", lambda s, m: x[s : s + m], len(x), x.shape[1], rq, args, "real"
        )
    _write_report(args.report, "ann", results)


def _machine() -> dict[str, Any]:
    import usearch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        "usearch": usearch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _write_report(folder: str | None, mode: str, results: dict[str, Any]) -> None:
    print(json.dumps(results, indent=1, default=str))
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    key = next(k for k in results if k != "machine")
    r = results[key]
    name = (
        f"{mode}-real{r['n']}x{r['dim']}"
        if key.startswith("real") and "n" in r
        else f"{mode}-{key.split()[1]}"
    )
    if mode == "ann" and "ef" in results[key]:
        name += f"-ef{results[key]['ef']}"
    (path / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {path / name}.json")
