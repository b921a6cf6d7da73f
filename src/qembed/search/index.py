"""Incremental indexing: embed only what changed, remove what disappeared, survive a kill.

How a run decides what to do:

1. each document gets a hash of everything that ends up in its chunks (text, title,
   metadata, chunk settings); equal to the stored hash -> *unchanged*, not even re-chunked;
2. a changed document is re-chunked and its chunks are looked up by *content hash*: a
   chunk whose exact text is already stored (in any document) reuses that vector, so
   editing one paragraph embeds one or two chunks, not the file;
3. documents are committed in batches (``commit_every`` chunks): the store replaces each
   document's chunks and records its new hash in one commit, so a killed run leaves every
   document either old or new, and the next run redoes only the ones not committed;
4. documents under an indexed path that were not seen are removed (at the end, so an
   interrupted run never removes anything it has not checked).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from qembed.embedding.identity import Difference, VectorIdentity, errors, warnings
from qembed.embedding.protocol import InProcessEncoder
from qembed.errors import InputError, InternalError
from qembed.search.chunking import ChunkConfig, Chunker
from qembed.search.documents import Chunk, Document
from qembed.search.ingest import RecordFields, Source, count_documents, documents, plan
from qembed.search.store.base import DocumentUpdate, Store
from qembed.settings import DEFAULT_BATCH_SIZE

log = logging.getLogger(__name__)


class Encoder(Protocol):
    """Search's adapter around the one ``TextEncoder`` protocol (``qembed.embedding.protocol``):
    retrieval's two sides, plus the token facts chunking needs (``EmbedderEncoder`` wraps an
    ``InProcessEncoder``)."""

    model: str  # the name to load it again (alias, hub id or folder)
    model_id: str
    dimension: int
    window: int  # most content tokens one document input may have

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def encode_documents(self, texts: list[str]) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...


class EmbedderEncoder:
    """An ``Embedder`` with the retrieval prompts: queries get the task instruction, documents none."""

    def __init__(self, embedder: Any, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        from qembed.model.instructions import resolve_prompt
        from qembed.model.sources import FALLBACK_NAMES

        self.embedder = embedder
        self.batch_size = batch_size
        self.encoder = InProcessEncoder(embedder, batch_size=batch_size)
        info = embedder.info
        self.model_id = info.model_id
        self.model = (
            FALLBACK_NAMES.get(info.model_id, "minilm")
            if info.fallback_reason
            else (embedder.settings.model or info.model_id)
        )
        self.dimension = info.dimension
        prompt = resolve_prompt(embedder.spec, task="retrieval", input_type="document")
        self.window = (
            embedder.max_tokens
            - embedder.tokenizer.special.count
            - len(embedder.tokenizer.prompt_ids(prompt))
        )

    @cached_property
    def identity(self) -> VectorIdentity:
        """What the index records about these vectors: the prompts are the ones the two
        encode methods below apply (task ``retrieval``, each side's input type)."""
        return VectorIdentity.of(self.embedder, task="retrieval", model=self.model)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.encoder.count_tokens(texts)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, role="document", task="retrieval").vectors

    def encode_query(self, text: str) -> np.ndarray:
        return self.encoder.encode([text], role="query", task="retrieval").vectors[0]


@dataclass
class IndexReport:
    """What a run did; documents count files or records, chunks count embedding rows."""

    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_removed: int = 0
    chunks_embedded: int = 0  # texts sent to the model
    chunks_reused: int = 0  # chunks of changed documents whose vector was already stored
    chunks_written: int = 0
    files_skipped: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.documents_added} added, {self.documents_updated} updated, {self.documents_unchanged} unchanged, "
            f"{self.documents_removed} removed documents; {self.chunks_embedded} chunks embedded, "
            f"{self.chunks_reused} reused, in {self.seconds:.1f} s"
        )


@dataclass
class Progress:
    total: int  # documents to look at
    done: int  # documents looked at (committed or unchanged)
    committed: int  # documents written in this run
    chunks_embedded: int


@dataclass
class IndexRun:
    """The state of one indexing run: what it did, the ids seen, documents looked at / written."""

    report: IndexReport
    seen: set[str] = field(default_factory=set)
    done: int = 0  # documents looked at (committed or unchanged)
    committed: int = 0


@dataclass
class PendingBatch:
    """Documents chunked and waiting for vectors: the step an async caller awaits in between."""

    docs: list[tuple[Document, str, list[Chunk], bool]] = field(
        default_factory=list
    )  # doc, hash, chunks, is_new
    reused: dict[str, np.ndarray] = field(default_factory=dict)
    to_embed: list[str] = field(default_factory=list)  # content hashes, each once
    texts: list[str] = field(default_factory=list)  # their embed texts

    @property
    def n_chunks(self) -> int:
        return sum(len(c) for _, _, c, _ in self.docs)


META_KEYS = ("model", "model_id", "dimension", "chunk_size", "chunk_overlap", "identity")
REEMBED_KEY = (
    "reembed"  # JSON {"to": identity, "after": last doc id done} while a --reembed runs; "" when none
)


class Indexer:
    """Writes documents into a store with one encoder and one chunking configuration."""

    def __init__(
        self, store: Store, encoder: Encoder, config: ChunkConfig | None = None, *, commit_every: int = 256
    ) -> None:
        self.store = store
        self.encoder = encoder
        meta = store.get_meta()
        check_model(meta, encoder, store.name)
        if config is None:
            config = ChunkConfig(int(meta.get("chunk_size", 512)), int(meta.get("chunk_overlap", 64)))
        self.config = config
        effective = ChunkConfig(
            min(config.size, encoder.window), min(config.overlap, min(config.size, encoder.window) // 2)
        )
        if effective.size < config.size:
            log.info("chunk size %d is over the model window; using %d tokens", config.size, effective.size)
        self.effective = effective
        self.chunker = Chunker(effective, encoder.count_tokens)
        self.commit_every = max(1, commit_every)
        wanted = {
            **model_meta(encoder), "chunk_size": str(config.size), "chunk_overlap": str(config.overlap),
        }  # fmt: skip
        if any(meta.get(k) != v for k, v in wanted.items()):  # an index without identity gets it here
            store.set_meta(wanted)

    # -- one batch: plan (which chunk texts need the model), then commit with their vectors -------------
    def _plan(self, chunked: list[tuple[Document, str, list[Chunk], bool]]) -> PendingBatch:
        batch = PendingBatch(docs=chunked)
        hashes = {c.content_hash: c for _, _, chunks, _ in chunked for c in chunks}
        batch.reused = self.store.vectors_for(list(hashes)) if hashes else {}
        for h, c in hashes.items():
            if h not in batch.reused:
                batch.to_embed.append(h)
                batch.texts.append(c.embed_text)
        return batch

    def commit_batch(self, batch: PendingBatch, vectors: np.ndarray | None, report: IndexReport) -> None:
        """Store a planned batch with the vectors of ``batch.texts`` (row for row)."""
        found = dict(batch.reused)
        if batch.texts:
            if vectors is None or len(vectors) != len(batch.texts):
                raise InternalError(
                    f"expected {len(batch.texts)} vectors, got {0 if vectors is None else len(vectors)}"
                )
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != self.encoder.dimension:
                raise InputError(
                    f"the model returned vectors of shape {list(vectors.shape)}; the index has {self.encoder.dimension} dimensions."
                )
            found.update(zip(batch.to_embed, vectors, strict=True))
        updates = []
        dim = self.encoder.dimension
        for doc, doc_hash, chunks, _ in batch.docs:
            rows = (
                np.stack([found[c.content_hash] for c in chunks])
                if chunks
                else np.zeros((0, dim), np.float32)
            )
            updates.append(DocumentUpdate(doc.doc_id, doc_hash, doc.path, chunks, rows))
        self.store.write(updates)
        report.chunks_embedded += len(batch.texts)
        embedded = set(batch.to_embed)
        report.chunks_reused += sum(
            1 for _, _, chunks, _ in batch.docs for c in chunks if c.content_hash not in embedded
        )
        report.chunks_written += batch.n_chunks
        for _, _, _, is_new in batch.docs:
            if is_new:
                report.documents_added += 1
            else:
                report.documents_updated += 1

    # -- the one indexing flow: plan batches, embed each, commit it ---------------------------------------
    def known_hashes(self, docs: Sequence[Document]) -> dict[str, str]:
        """The stored hash of each of ``docs`` that the index already holds."""
        known: dict[str, str] = {}
        for d in docs:
            known.update({k: v for k, v in self.store.doc_hashes(d.doc_id).items() if k == d.doc_id})
        return known

    def batches(
        self, docs: Iterable[Document], known: dict[str, str], run: IndexRun
    ) -> Iterator[PendingBatch]:
        """The changed documents of ``docs`` as planned batches of about ``commit_every`` chunks.

        Unchanged documents (same hash as stored) are counted and skipped without chunking;
        a document id seen twice is refused. Each batch is planned only when the caller asks
        for it, after the previous one was committed, so a chunk shared by two batches is
        embedded once. Callers (``index_documents`` in process, the ``/v1/index`` route
        through the server's queue) embed ``batch.texts`` and ``commit_batch`` each one.
        """
        pending: list[tuple[Document, str, list[Chunk], bool]] = []
        pending_chunks = 0
        chunking = self.effective.key()
        for doc in docs:
            if doc.doc_id in run.seen:
                raise InputError(f"document id {doc.doc_id!r} appears twice in one run.", param="id")
            run.seen.add(doc.doc_id)
            doc_hash = doc.content_hash(chunking)
            if known.get(doc.doc_id) == doc_hash:
                run.report.documents_unchanged += 1
                run.done += 1
                continue
            chunks = self.chunker.chunk(doc)
            pending.append((doc, doc_hash, chunks, doc.doc_id not in known))
            pending_chunks += len(chunks)
            if pending_chunks >= self.commit_every:
                yield self._plan(pending)
                pending, pending_chunks = [], 0
        if pending:
            yield self._plan(pending)

    # -- whole runs ---------------------------------------------------------------------------------------
    def index_documents(
        self,
        docs: Iterable[Document],
        *,
        known: dict[str, str] | None = None,
        total: int | None = None,
        progress: Callable[[Progress], None] | None = None,
        report: IndexReport | None = None,
    ) -> tuple[IndexReport, set[str]]:
        """Add or replace documents by id (unchanged ones are skipped). Returns the ids seen."""
        run = IndexRun(report or IndexReport())
        start = time.perf_counter()
        if known is None:
            docs = list(docs)
            known = self.known_hashes(docs)
        for batch in self.batches(docs, known, run):
            vectors = self.encoder.encode_documents(batch.texts) if batch.texts else None
            self.commit_batch(batch, vectors, run.report)
            run.done += len(batch.docs)
            run.committed += len(batch.docs)
            if progress:
                progress(Progress(total or 0, run.done, run.committed, run.report.chunks_embedded))
        run.report.seconds += time.perf_counter() - start
        return run.report, run.seen

    def index_paths(
        self,
        paths: Sequence[str],
        *,
        fields: RecordFields = RecordFields(),
        exclude: Sequence[str] = (),
        progress: Callable[[Progress], None] | None = None,
    ) -> IndexReport:
        """Index files and folders; remove the documents of files that are gone."""
        start = time.perf_counter()
        sources = plan(paths, exclude=exclude)
        report = IndexReport(files_skipped=sum(s.skipped for s in sources))
        total = sum(count_documents(s) for s in sources)
        known: dict[str, str] = {}
        for s in sources:
            known.update(_owned(self.store, s))
        seen: set[str] = set()
        state = {"done": 0}

        def relay(p: Progress) -> None:
            if progress:
                progress(Progress(total, state["done"] + p.done, p.committed, p.chunks_embedded))

        for source in sources:
            _, ids = self.index_documents(
                documents(source, fields), known=known, total=total, progress=relay, report=report
            )
            state["done"] += len(ids)
            seen |= ids
        gone = [d for d in known if d not in seen]
        for i in range(0, len(gone), 500):
            self.store.write([], deletes=gone[i : i + 500])
        report.documents_removed = len(gone)
        report.seconds = time.perf_counter() - start
        if progress:
            progress(
                Progress(
                    total, total, report.documents_added + report.documents_updated, report.chunks_embedded
                )
            )
        return report


def _owned(store: Store, source: Source) -> dict[str, str]:
    hashes = store.doc_hashes(source.scope)
    return {d: h for d, h in hashes.items() if source.owns(d)}


def encoder_identity(encoder: Encoder) -> VectorIdentity | None:
    """The encoder's ``VectorIdentity`` (``EmbedderEncoder`` has one); None for encoders that
    only name a model (test fakes, adapters over HTTP), which are checked by model id and size."""
    ident = getattr(encoder, "identity", None)
    return ident if isinstance(ident, VectorIdentity) else None


def model_meta(encoder: Encoder) -> dict[str, str]:
    """The meta keys that say which model made an index's vectors (what ``check_model`` reads)."""
    out = {"model": encoder.model, "model_id": encoder.model_id, "dimension": str(encoder.dimension)}
    ident = encoder_identity(encoder)
    if ident is not None:
        out["identity"] = ident.to_json()
    return out


def recorded_identity(meta: dict[str, str]) -> VectorIdentity | None:
    """The identity an index recorded; None for an index written before identities (or unreadable)."""
    text = meta.get("identity")
    if not text:
        return None
    try:
        return VectorIdentity.from_json(text)
    except (ValueError, TypeError) as exc:
        log.warning("the index's identity record is unreadable (%s); checking the model id only", exc)
        return None


def check_model(
    meta: dict[str, str], encoder: Encoder, name: str, *, reembedding: bool = False
) -> list[Difference]:
    """An index holds vectors of one model; mixing models would make every score meaningless.

    A different model, revision, prompt, dimension or normalization is an ``InputError`` that
    names both identities and what differs; another dtype, backend or quantization of the same
    weights is logged as a warning and returned (those vectors agree to about 1e-3 cosine).
    ``reembedding``: the caller is ``reembed``, which is the cure, so nothing is refused."""
    pending = meta.get(REEMBED_KEY)
    if pending and not reembedding:
        target = _pending_model(pending)
        raise InputError(
            f"index {name!r} is half re-embedded (a `qembed index --reembed` run stopped before it finished), "
            f"so its vectors mix two models. Run `qembed index --reembed --index {name} --model {target}` "
            "again to finish it.",
            param="model",
        )
    recorded, current = recorded_identity(meta), encoder_identity(encoder)
    if recorded is not None and current is not None:
        diffs = recorded.compare(current)
        bad = errors(diffs)
        if bad and not reembedding:
            raise InputError(
                f"index {name!r} was built with {recorded.label()}; the model now is {current.label()}. "
                f"They differ in {'; '.join(str(d) for d in bad)}, so their vectors cannot be compared. "
                f"Use --model {recorded.model or recorded.model_id} (the model it was built with), or "
                f"`qembed index --reembed --index {name} --model {current.model or current.model_id}` "
                "to re-embed every chunk with the new one.",
                param="model",
            )
        for d in warnings(diffs):
            log.warning(
                "index %r: %s (the same weights; vectors agree to about 1e-3 cosine, so the index is used as it is)",
                name, d,
            )  # fmt: skip
        return diffs
    built = meta.get("model_id")
    if (
        built
        and not reembedding
        and (built != encoder.model_id or meta.get("dimension") != str(encoder.dimension))
    ):
        raise InputError(
            f"index {name!r} was built with {built} ({meta.get('dimension')} dimensions); "
            f"it cannot be used with {encoder.model_id} ({encoder.dimension}). Use --model {meta.get('model', built)}, "
            f"another --index, or `qembed index --reembed --index {name} --model {encoder.model}`.",
            param="model",
        )
    return []


def _pending_model(pending: str) -> str:
    try:
        return str(json.loads(json.loads(pending)["to"])["model"])
    except (ValueError, KeyError, TypeError):
        return "MODEL"


def reembed(
    store: Store,
    encoder: Encoder,
    *,
    commit_every: int = 256,
    progress: Callable[[Progress], None] | None = None,
) -> IndexReport:
    """Replace the vector of every stored chunk with ``encoder``'s and record its identity.

    The chunks stay as they are (their text, headings and document hashes are in the
    store), so no source file is read. Crash-safe and resumable: before the first write the
    target identity goes into ``meta[REEMBED_KEY]`` with the last document done; documents
    are rewritten in sorted id order, ``commit_every`` chunks per commit, each followed by
    the new progress mark; until the final commit (identity + mark cleared, one transaction)
    every other use of the index is refused (``check_model``), and running this again with
    the same model resumes after the mark (a batch committed just before a kill is redone,
    which is harmless). The caller holds the store's writer lock.
    """
    start = time.perf_counter()
    meta = store.get_meta()
    check_model(meta, encoder, store.name, reembedding=True)
    hashes = store.doc_hashes()
    old_dim = meta.get("dimension")
    if old_dim and old_dim != str(encoder.dimension) and hashes:
        raise InputError(
            f"index {store.name!r} holds {old_dim}-dimension vectors and {encoder.model_id} makes "
            f"{encoder.dimension}: --reembed keeps the index's vector layout, so it cannot change the size. "
            f"Build the index again from its sources: `qembed index PATHS --rebuild --index {store.name} "
            f"--model {encoder.model}`.",
            param="model",
        )
    target = model_meta(encoder)
    key = json.dumps(target, sort_keys=True)
    after = ""
    if meta.get(REEMBED_KEY):
        try:
            state = json.loads(meta[REEMBED_KEY])
        except ValueError:
            state = {}
        if state.get("to") == key:  # the same migration, interrupted: resume after its mark
            after = str(state.get("after", ""))
    store.set_meta({REEMBED_KEY: json.dumps({"to": key, "after": after})})
    todo = sorted(d for d in hashes if d > after)
    report = IndexReport(documents_unchanged=len(hashes) - len(todo))
    done = report.documents_unchanged
    pending: list[tuple[str, list[Chunk]]] = []

    def flush() -> None:
        nonlocal done
        texts: dict[str, str] = {}
        for _, chunks in pending:
            for c in chunks:
                texts.setdefault(c.content_hash, c.embed_text)
        vectors = np.asarray(encoder.encode_documents(list(texts.values())), dtype=np.float32)
        if vectors.shape != (len(texts), encoder.dimension):
            raise InternalError(
                f"expected {len(texts)} vectors of {encoder.dimension}, got shape {list(vectors.shape)}"
            )
        found = dict(zip(texts, vectors, strict=True))
        updates = [
            DocumentUpdate(d, hashes[d], chunks[0].path, chunks, np.stack([found[c.content_hash] for c in chunks]))
            for d, chunks in pending
        ]  # fmt: skip
        store.write(updates)
        store.set_meta({REEMBED_KEY: json.dumps({"to": key, "after": pending[-1][0]})})
        report.chunks_embedded += len(texts)
        report.chunks_written += sum(len(c) for _, c in pending)
        report.documents_updated += len(pending)
        done += len(pending)
        pending.clear()
        if progress:
            progress(Progress(len(hashes), done, report.documents_updated, report.chunks_embedded))

    n_chunks = 0
    for doc_id in todo:
        chunks = store.chunks_of(doc_id)
        if not chunks:  # an empty document: no vectors to replace
            report.documents_unchanged += 1
            done += 1
            continue
        pending.append((doc_id, chunks))
        n_chunks += len(chunks)
        if n_chunks >= max(1, commit_every):
            flush()
            n_chunks = 0
    if pending:
        flush()
    store.set_meta({**target, REEMBED_KEY: ""})
    report.seconds = time.perf_counter() - start
    return report
