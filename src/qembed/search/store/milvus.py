"""The Milvus deployment of the store, for indexes that outgrow one machine.

``--store-uri http://host:19530`` talks to a Milvus server or cluster; a local file path
(``./milvus.db``) starts Milvus Lite, which is how the tests exercise this code. Install
with ``pip install 'qembed-server[milvus]'``. A token for a secured server is read from
``QEMBED_MILVUS_TOKEN`` (``user:password`` or an API key).

Layout per index NAME (collection names allow letters, digits and '_' only, so '-' becomes '_'):

- ``qembed_NAME``: one row per chunk: the chunk fields, the vector (IP metric), the BM25
  terms (``bm25.terms``, non-ASCII terms hex-encoded because Milvus' ``standard`` analyzer
  would split Chinese words into characters) and the sparse vector Milvus' BM25 function
  derives from them;
- ``qembed_NAME__docs``: one row per document (id, hash, chunk count);
- ``qembed_NAME__meta``: key/value facts of the index (model, dimension, chunking).

Servers before Milvus 2.5 (tested: the ``milvus`` 2.3.5 PyPI server) have neither sparse
vectors nor the BM25 function. On those the chunks collection holds the terms as an ARRAY
field (``term_list``, with repeats, the first 4096) instead, and ``text_search`` scores
Okapi BM25 (k1=1.2, b=0.75) here: the chunks holding any query term are fetched with
``array_contains_any`` (at most 16384), document frequencies are counted on the server, and
the average length is that of the fetched chunks. Fine for small and medium indexes; use
Milvus >= 2.5 for large ones.

Milvus has no multi-collection transactions, so a document is replaced in an order that
an interrupted run can repair: upsert its chunks (ids are deterministic), delete its other
chunks, then record its new hash last. A run killed in between leaves the old hash, so the
next run redoes that document; no duplicate can appear because ids repeat.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from qembed.errors import InputError, InternalError, NotFound
from qembed.search import bm25
from qembed.search.documents import Chunk
from qembed.search.store.base import (
    DocumentUpdate,
    Filters,
    Hit,
    Store,
    StoreStats,
    check_update_vectors,
    normalize_rows,
)

CHUNK_FIELDS = [
    "id", "doc_id", "ordinal", "path", "title", "heading", "line_start", "line_end", "language", "file_type",
    "text", "context", "metadata", "content_hash",
]  # fmt: skip
MAX_VARCHAR = 65535
DUMMY_DIM = 2  # Milvus needs a vector field in every collection
BATCH = 500
MAX_TERMS = 4096  # Milvus' largest ARRAY capacity (the pre-2.5 text layout)
TERM_BYTES = 256  # bm25 terms are <= 64 characters, at most 4 UTF-8 bytes each
K1, B = 1.2, 0.75
QUERY_LIMIT = 16384  # Milvus' largest offset + limit of one query


def _import_pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError:
        raise InputError(
            "--store-uri needs pymilvus: pip install 'qembed-server[milvus]'.", param="store_uri"
        ) from None
    return pymilvus


def quote(value: str) -> str:
    """A Milvus expression string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prefix_expr(field: str, prefix: str) -> str:
    """``field`` starts with ``prefix``, as a range of strings: LIKE escapes differ between
    Milvus versions (2.3 has none for '_' and '%'), comparisons do not."""
    upper = prefix
    while upper and ord(upper[-1]) == 0x10FFFF:
        upper = upper[:-1]
    if not upper:
        return f"{field} >= {quote(prefix)}"
    upper = upper[:-1] + chr(ord(upper[-1]) + 1)
    return f"{field} >= {quote(prefix)} and {field} < {quote(upper)}"


def clip(text: str, max_bytes: int = MAX_VARCHAR) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def milvus_terms(terms: Sequence[str]) -> str:
    """Terms as one string Milvus' standard analyzer splits back into exactly these terms."""
    return " ".join(t if t.isascii() else "u" + t.encode("utf-8").hex() for t in terms)


def filter_expr(filters: Filters | None, extra: str = "") -> str:
    parts = [extra] if extra else []
    if filters is not None and not filters.empty:
        if filters.path_prefix:
            parts.append(prefix_expr("path", filters.path_prefix))
        if filters.language:
            parts.append(f"language == {quote(filters.language.lower())}")
        if filters.file_type:
            parts.append(f"file_type == {quote(filters.normalized_file_type() or '')}")
    return " and ".join(parts)


def server_has_bm25(version: str) -> bool:
    """Whether a Milvus server of this version (``v2.3.5-lite``, ``2.5.4``) has sparse vectors
    and the BM25 function (Milvus 2.5); an unparseable version is assumed to be current."""
    import re

    m = re.match(r"v?(\d+)\.(\d+)", version.strip())
    return not m or (int(m.group(1)), int(m.group(2))) >= (2, 5)


def bm25_scores(
    query: Sequence[str], rows: Sequence[Sequence[str]], df: dict[str, int], n_docs: int
) -> list[float]:
    """Okapi BM25 (k1=1.2, b=0.75, idf ``log(1 + (N - df + 0.5) / (df + 0.5))``, as Milvus and
    Lucene) of each row's terms (with repeats) for the distinct query terms."""
    import math
    from collections import Counter

    if not rows:
        return []
    avgdl = max(sum(len(r) for r in rows) / len(rows), 1.0)
    idf = {t: math.log(1 + (n_docs - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in query}
    out = []
    for r in rows:
        tf = Counter(r)
        norm = K1 * (1 - B + B * len(r) / avgdl)
        out.append(sum(idf[t] * tf[t] * (K1 + 1) / (tf[t] + norm) for t in query if tf[t]))
    return out


def collection_name(name: str) -> str:
    return "qembed_" + name.replace("-", "_")


# Milvus Lite runs its server inside this process and keeps the file locked until it is
# released; pymilvus never releases it. We do when the last store on that file closes, so
# another process (a CLI run, the server) can open the index next.
_lite_users: dict[str, int] = {}
_lite_lock = threading.Lock()


def _is_lite(uri: str) -> bool:
    return "://" not in uri


def _lite_acquire(uri: str) -> None:
    with _lite_lock:
        key = os.path.abspath(uri)
        _lite_users[key] = _lite_users.get(key, 0) + 1


def _lite_release(uri: str) -> None:
    key = os.path.abspath(uri)
    with _lite_lock:
        left = _lite_users.get(key, 1) - 1
        if left > 0:
            _lite_users[key] = left
            return
        _lite_users.pop(key, None)
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(key)


class MilvusStore(Store):
    kind = "milvus"

    def __init__(self, uri: str, name: str, *, create: bool = True, token: str | None = None) -> None:
        pm = _import_pymilvus()
        self._pm = pm
        self.uri = uri
        self.name = name
        self.chunks = collection_name(name)
        self.docs = self.chunks + "__docs"
        self.meta = self.chunks + "__meta"
        self.lock = threading.RLock()
        token = token if token is not None else os.environ.get("QEMBED_MILVUS_TOKEN", "")
        try:
            self.client = pm.MilvusClient(uri=uri, token=token) if token else pm.MilvusClient(uri=uri)
        except Exception as exc:  # pymilvus raises its own classes and grpc errors
            hint = (
                " (Milvus Lite allows one process per file; is another qembed using it?)"
                if _is_lite(uri)
                else ""
            )
            raise InputError(f"cannot connect to Milvus at {uri}: {exc}{hint}", param="store_uri") from exc
        if _is_lite(uri):
            _lite_acquire(uri)
        exists = self.client.has_collection(self.meta)
        if not exists and not create:
            self.close()
            raise NotFound(
                f"no index {name!r} in Milvus at {uri} (build it with `qembed index PATH --index {name} --store-uri {uri}`).",
                param="index",
            )
        if not exists:
            self._create_small(self.meta, [("key", 512), ("value", MAX_VARCHAR)])
        if not self.client.has_collection(self.docs):
            self._create_small(
                self.docs, [("doc_id", 4096), ("doc_hash", 128), ("path", 4096)], ints=("n_chunks",)
            )
        self._dim: int | None = None
        self._native_bm25: bool | None = None
        # Collections of an existing index are not loaded after a restart (Milvus Lite, or a
        # server that released them); loading a loaded collection is a no-op.
        for collection in (self.meta, self.docs, self.chunks):
            if self.client.has_collection(collection):
                self.client.load_collection(collection)

    # -- schema -----------------------------------------------------------------------------------
    def _create_small(self, name: str, fields: list[tuple[str, int]], ints: tuple[str, ...] = ()) -> None:
        DataType = self._pm.DataType
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        for i, (fname, length) in enumerate(fields):
            schema.add_field(fname, DataType.VARCHAR, is_primary=i == 0, max_length=length)
        for fname in ints:
            schema.add_field(fname, DataType.INT64)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=DUMMY_DIM)
        index = self.client.prepare_index_params()
        index.add_index("v", index_type="FLAT", metric_type="L2")
        self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

    def _bm25_native(self) -> bool:
        """Whether the chunks collection has (or, new, gets) the server's BM25 function."""
        if self._native_bm25 is None:
            if self.client.has_collection(self.chunks):
                info = self.client.describe_collection(self.chunks)
                self._native_bm25 = any(f["name"] == "sparse" for f in info["fields"])
            elif _is_lite(self.uri):
                self._native_bm25 = True
            else:
                self._native_bm25 = server_has_bm25(str(self.client.get_server_version()))
        return self._native_bm25

    def _ensure_chunks(self, dim: int) -> None:
        if self._dim == dim or self.client.has_collection(self.chunks):
            self._dim = dim
            return
        native = self._bm25_native()
        pm = self._pm
        DataType = pm.DataType
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        for fname, length in (
            ("doc_id", 4096),
            ("path", 4096),
            ("title", 4096),
            ("heading", 8192),
            ("language", 64),
            ("file_type", 64),
            ("content_hash", 128),
        ):
            schema.add_field(fname, DataType.VARCHAR, max_length=length)
        for fname in ("ordinal", "line_start", "line_end"):
            schema.add_field(fname, DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("context", DataType.VARCHAR, max_length=8192)
        schema.add_field("metadata", DataType.JSON)
        if native:
            schema.add_field(
                "terms",
                DataType.VARCHAR,
                max_length=MAX_VARCHAR,
                enable_analyzer=True,
                analyzer_params={"type": "standard"},
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                pm.Function(
                    name="bm25",
                    function_type=pm.FunctionType.BM25,
                    input_field_names=["terms"],
                    output_field_names=["sparse"],
                )
            )
        else:
            schema.add_field(
                "term_list",
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=MAX_TERMS,
                max_length=TERM_BYTES,
            )
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="IP")
        if native:
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self.client.create_collection(
            self.chunks, schema=schema, index_params=index, consistency_level="Strong"
        )
        self._dim = dim

    def _has_chunks(self) -> bool:
        return self._dim is not None or self.client.has_collection(self.chunks)

    # -- meta ---------------------------------------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        with self.lock:
            rows = self.client.query(
                self.meta, filter='key != ""', output_fields=["key", "value"], limit=16384
            )
        return {r["key"]: r["value"] for r in rows if not r["key"].startswith("store.")}

    def set_meta(self, values: dict[str, str]) -> None:
        with self.lock:
            rows = [{"key": k, "value": clip(str(v)), "v": [0.0] * DUMMY_DIM} for k, v in values.items()]
            if rows:
                self.client.upsert(self.meta, rows)

    # -- incremental indexing -------------------------------------------------------------------------
    def doc_hashes(self, prefix: str = "") -> dict[str, str]:
        expr = prefix_expr("doc_id", prefix) if prefix else 'doc_id != ""'
        out: dict[str, str] = {}
        with self.lock:
            it = self.client.query_iterator(
                self.docs, batch_size=1000, filter=expr, output_fields=["doc_id", "doc_hash"]
            )
            try:
                while batch := it.next():
                    out.update((r["doc_id"], r["doc_hash"]) for r in batch)
            finally:
                it.close()
        return out

    def vectors_for(self, content_hashes: Collection[str]) -> dict[str, np.ndarray]:
        hashes = list(dict.fromkeys(content_hashes))
        if not hashes or not self._has_chunks():
            return {}
        out: dict[str, np.ndarray] = {}
        with self.lock:
            for i in range(0, len(hashes), BATCH):
                part = hashes[i : i + BATCH]
                expr = "content_hash in [" + ",".join(quote(h) for h in part) + "]"
                rows = self.client.query(
                    self.chunks, filter=expr, output_fields=["content_hash", "vector"], limit=16384
                )
                for r in rows:
                    out[r["content_hash"]] = np.asarray(r["vector"], dtype=np.float32)
        return out

    def write(self, updates: Sequence[DocumentUpdate], deletes: Sequence[str] = ()) -> None:
        for u in updates:  # every document checked before anything is written
            check_update_vectors(u)
        with self.lock:
            for u in updates:
                if len(u.chunks) != len(u.vectors):
                    raise InternalError(
                        f"document {u.doc_id}: {len(u.chunks)} chunks but {len(u.vectors)} vectors"
                    )
                if not u.chunks:
                    continue
                vectors = np.asarray(u.vectors, dtype=np.float32)
                self._ensure_chunks(int(vectors.shape[1]))
                vectors = normalize_rows(vectors, self._dim or vectors.shape[1])
                rows = [self._row(c, v) for c, v in zip(u.chunks, vectors, strict=True)]
                for i in range(0, len(rows), BATCH):
                    self.client.upsert(self.chunks, rows[i : i + BATCH])
            if self._has_chunks():
                for u in updates:
                    keep = ",".join(quote(c.chunk_id) for c in u.chunks)
                    expr = f"doc_id == {quote(u.doc_id)}" + (f" and id not in [{keep}]" if keep else "")
                    self.client.delete(self.chunks, filter=expr)
            if updates:
                self.client.upsert(self.docs, [
                    {"doc_id": u.doc_id, "doc_hash": u.doc_hash, "path": clip(u.path, 4096), "n_chunks": len(u.chunks), "v": [0.0] * DUMMY_DIM}
                    for u in updates
                ])  # fmt: skip
            for i in range(0, len(deletes), BATCH):
                ids = ",".join(quote(d) for d in deletes[i : i + BATCH])
                if self._has_chunks():
                    self.client.delete(self.chunks, filter=f"doc_id in [{ids}]")
                self.client.delete(self.docs, filter=f"doc_id in [{ids}]")

    def _row(self, c: Chunk, vector: np.ndarray) -> dict[str, Any]:
        import json

        terms = bm25.terms(c.embed_text)
        row = {
            "id": c.chunk_id, "doc_id": clip(c.doc_id, 4096), "ordinal": c.ordinal, "path": clip(c.path, 4096),
            "title": clip(c.title, 4096), "heading": clip(json.dumps(list(c.heading), ensure_ascii=False), 8192),
            "line_start": c.line_start, "line_end": c.line_end, "language": c.language[:64], "file_type": c.file_type[:64],
            "text": clip(c.text), "context": clip(c.context, 8192), "metadata": c.metadata, "content_hash": c.content_hash,
            "vector": vector.tolist(),
        }  # fmt: skip
        if self._bm25_native():
            row["terms"] = clip(milvus_terms(terms))
        else:
            row["term_list"] = [clip(t, TERM_BYTES) for t in terms[:MAX_TERMS]]
        return row

    # -- search -----------------------------------------------------------------------------------------
    @staticmethod
    def _chunk(entity: dict[str, Any]) -> Chunk:
        import json

        return Chunk(
            chunk_id=entity["id"], doc_id=entity["doc_id"], ordinal=int(entity["ordinal"]), path=entity["path"],
            title=entity["title"], heading=tuple(json.loads(entity["heading"])), line_start=int(entity["line_start"]),
            line_end=int(entity["line_end"]), language=entity["language"], file_type=entity["file_type"],
            text=entity["text"], context=entity["context"], metadata=dict(entity.get("metadata") or {}),
        )  # fmt: skip

    def _hits(self, result: Any, absolute: bool = False) -> list[Hit]:
        hits = []
        for r in result[0] if result else []:
            entity = dict(r["entity"])
            entity.setdefault("id", r["id"])
            score = float(r["distance"])
            # Milvus Lite reports BM25 scores negated (best first still); servers report them positive.
            hits.append(Hit(self._chunk(entity), abs(score) if absolute else score))
        return hits

    def dense_search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        if k <= 0 or not self._has_chunks():
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        with self.lock:
            result = self.client.search(
                self.chunks, data=[q.tolist()], anns_field="vector", limit=k, filter=filter_expr(filters),
                output_fields=CHUNK_FIELDS, search_params={"metric_type": "IP"},
            )  # fmt: skip
        return self._hits(result)

    def text_search(self, terms: Sequence[str], k: int, filters: Filters | None = None) -> list[Hit]:
        terms = [t for t in dict.fromkeys(terms) if t]
        if not terms or k <= 0 or not self._has_chunks():
            return []
        if not self._bm25_native():
            return self._client_text_search(terms, k, filters)
        with self.lock:
            result = self.client.search(
                self.chunks, data=[milvus_terms(terms)], anns_field="sparse", limit=k, filter=filter_expr(filters),
                output_fields=CHUNK_FIELDS, search_params={"metric_type": "BM25"},
            )  # fmt: skip
        return self._hits(result, absolute=True)

    def _client_text_search(self, terms: list[str], k: int, filters: Filters | None) -> list[Hit]:
        """BM25 scored here, for servers without the BM25 function (see the module docstring)."""
        listed = ",".join(quote(t) for t in terms)
        with self.lock:
            rows = self.client.query(
                self.chunks, filter=filter_expr(filters, f"array_contains_any(term_list, [{listed}])"),
                output_fields=[*CHUNK_FIELDS, "term_list"], limit=QUERY_LIMIT,
            )  # fmt: skip
            if not rows:
                return []
            n_docs = self._count(self.chunks)
            df = {t: self._count(self.chunks, f"array_contains(term_list, {quote(t)})") for t in terms}
        scores = bm25_scores(terms, [r["term_list"] for r in rows], df, n_docs)
        ranked = sorted(zip(scores, (r["id"] for r in rows), rows, strict=True), key=lambda x: (-x[0], x[1]))
        return [Hit(self._chunk(r), s) for s, _, r in ranked[:k] if s > 0]

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        if not self._has_chunks():
            return []
        with self.lock:
            rows = self.client.query(
                self.chunks, filter=f"doc_id == {quote(doc_id)}", output_fields=CHUNK_FIELDS, limit=16384
            )
        return sorted((self._chunk(r) for r in rows), key=lambda c: c.ordinal)

    def all_chunk_ids(self) -> list[tuple[str, str, int]]:
        if not self._has_chunks():
            return []
        out: list[tuple[str, str, int]] = []
        with self.lock:
            it = self.client.query_iterator(
                self.chunks, batch_size=1000, filter='id != ""', output_fields=["id", "doc_id", "ordinal"]
            )
            try:
                while batch := it.next():
                    out.extend((r["id"], r["doc_id"], int(r["ordinal"])) for r in batch)
            finally:
                it.close()
        return sorted(out, key=lambda r: (r[1], r[2]))

    def _count(self, collection: str, expr: str = "") -> int:
        rows = self.client.query(collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def stats(self) -> StoreStats:
        with self.lock:
            docs = self._count(self.docs)
            chunks = self._count(self.chunks) if self._has_chunks() else 0
            dim = None
            if self._has_chunks():
                info = self.client.describe_collection(self.chunks)
                dim = next((int(f["params"]["dim"]) for f in info["fields"] if f["name"] == "vector"), None)
        return StoreStats(docs, chunks, dim, {"uri": self.uri, "collection": self.chunks})

    def close(self) -> None:
        with self.lock:
            if getattr(self, "_closed", False):
                return
            self._closed = True
            self.client.close()
            if _is_lite(self.uri):
                _lite_release(self.uri)
