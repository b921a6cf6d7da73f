"""A corpus job on one machine: stream the input, embed by token budget, commit part files.

The loop (``run_local``): read records in small blocks, drop the ids the output already
holds (a resumed run) and ids seen earlier in this run (duplicates: the first record with
an id wins, later ones are counted and skipped), tokenize each block once
(``Embedder.prepare``), and once the blocks gathered hold ``batch_tokens`` tokens run all
their windows through the model in length-sorted batches of the engine's padded-token
budget (``--max-batch-tokens``; the same plan ``Embedder.encode`` uses, so the vectors are
``encode``'s). Finished rows wait in a buffer that is committed as one part file every
``commit_every`` rows: what a kill can lose is at most one buffer.

``Committer`` is that buffer and the resume bookkeeping; the Ray path (``qembed.corpus.ray_job``)
feeds it the batches its actors return, so both paths write and resume the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qembed.corpus.output import CorpusIdentity, CorpusOutput
from qembed.corpus.records import CorpusInput
from qembed.embedding.identity import VectorIdentity
from qembed.encode.batching import plan_batches
from qembed.encode.options import EncodeOptions
from qembed.errors import InputError
from qembed.settings import InputType

log = logging.getLogger(__name__)

DEFAULT_BATCH_TOKENS = 32768  # tokens gathered before the model runs (what one progress step is)
DEFAULT_COMMIT_EVERY = 4096  # rows per part file: what a kill can lose at most
READ_ROWS = 64  # records per read block (and per tokenizer call)


@dataclass(frozen=True)
class CorpusOptions:
    """How the corpus is encoded: which prompt (a task preset and side by default: retrieval
    documents, no instruction for Qwen3) and the Matryoshka size."""

    task: str | None = "retrieval"
    input_type: InputType = "document"
    prompt_name: str | None = None
    prompt: str | None = None
    instruction: str | None = None
    dimensions: int | None = None

    def choices(self) -> dict[str, Any]:
        """The prompt choice and dimensions as encode options (a named prompt replaces the task preset)."""
        chosen = {"prompt_name": self.prompt_name, "prompt": self.prompt, "instruction": self.instruction}
        given: dict[str, Any] = {k: v for k, v in chosen.items() if v is not None}
        if len(given) > 1:
            raise InputError(
                f"Give at most one of --prompt-name, --prompt, --instruction (got {', '.join(given)}).",
                param=list(given)[1],
            )
        if not given and self.task is not None:
            given["task"] = self.task
        if self.dimensions is not None:
            given["dimensions"] = self.dimensions
        return given

    def encode_options(self) -> EncodeOptions:
        return EncodeOptions.of(input_type=self.input_type, **self.choices())

    def identity(self, embedder: Any) -> CorpusIdentity:
        """The identity of the vectors this job makes with ``embedder`` (recorded in every part)."""
        choices = self.choices()
        task = choices.pop("task", None)
        resolved = embedder.resolve(self.encode_options())
        return CorpusIdentity(
            VectorIdentity.of(embedder, task=task, **choices),
            input_type=self.input_type,
            prompt=resolved.prefix,
            long_text=resolved.long_text,
            max_tokens=int(embedder.max_tokens),
        )


class BatchEmbedder:
    """An ``Embedder`` and a job's options: texts -> (vectors, tokens per text), through the
    same stages and batch plan as ``Embedder.encode`` (prepare, length-sorted padded-token
    batches, finish), with the tokenization done once per text."""

    def __init__(self, embedder: Any, options: CorpusOptions) -> None:
        from qembed.serving.service import default_max_batch_tokens

        self.embedder = embedder
        self.options = options
        self.resolved = embedder.resolve(options.encode_options())
        s = embedder.settings
        self.max_batch_tokens = int(s.max_batch_tokens or default_max_batch_tokens(embedder.info.device))
        self.max_rows = int(s.max_batch_size)

    def prepare(self, texts: list[str]) -> Any:
        return self.embedder.prepare(texts, self.resolved)

    def run(self, prepared: list[Any]) -> list[np.ndarray]:
        """Every window of several prepared blocks in one batch plan; one [n, dim] array per block."""
        windows = [w for p in prepared for w in p.windows]
        vectors = np.zeros((len(windows), self.embedder.dimension), dtype=np.float32)
        for batch in plan_batches(
            [len(w.ids) for w in windows], max_tokens=self.max_batch_tokens, max_rows=self.max_rows
        ):
            vectors[batch] = self.embedder.run([windows[i] for i in batch])
        out, start = [], 0
        for p in prepared:
            end = start + len(p.windows)
            out.append(self.embedder.finish(p, vectors[start:end]))
            start = end
        return out

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        prepared = self.prepare(texts)
        return self.run([prepared])[0], prepared.tokens_per_input()


@dataclass
class CorpusReport:
    """What a run did. ``already_done``: ids the output held before the run (not embedded
    again); ``duplicates``: later records with an id seen earlier in the input (skipped)."""

    records: int = 0
    already_done: int = 0
    duplicates: int = 0
    embedded: int = 0
    tokens: int = 0
    parts_written: int = 0
    rows_in_output: int = 0
    seconds: float = 0.0
    duplicate_examples: list[str] = field(default_factory=list)
    rows_per_worker: dict[str, int] = field(
        default_factory=dict
    )  # --ray: rows each actor embedded (host:pid)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["docs_per_s"] = round(self.embedded / self.seconds, 1) if self.seconds else None
        out["tokens_per_s"] = round(self.tokens / self.seconds, 1) if self.seconds else None
        return out

    def summary(self) -> str:
        rate = (
            f" ({self.embedded / self.seconds:,.0f} docs/s, {self.tokens / self.seconds:,.0f} tokens/s)"
            if self.seconds
            else ""
        )
        dup = f", {self.duplicates} duplicate ids skipped (first record wins)" if self.duplicates else ""
        return (
            f"{self.embedded} documents embedded ({self.tokens} tokens) in {self.seconds:.1f} s{rate}, "
            f"{self.already_done} already in the output{dup}; {self.parts_written} parts written, "
            f"{self.rows_in_output} rows in the output"
        )


@dataclass(frozen=True)
class Progress:
    total: int  # documents to embed in this run (input records less those already done)
    done: int  # documents embedded (committed or buffered)
    committed: int  # documents in part files written by this run
    tokens: int
    parts: int
    seconds: float


ProgressFn = Callable[[Progress], None]


class Committer:
    """The rows of a run on their way into part files, and which ids are taken.

    ``claim`` filters a block before it is embedded (ids already committed, or seen earlier
    in this run); ``add`` buffers embedded rows (dropping ids another batch already added:
    the Ray path cannot claim before its actors embed) and commits a part every
    ``commit_every`` rows; ``close`` commits the rest."""

    def __init__(
        self,
        output: CorpusOutput,
        identity: CorpusIdentity,
        *,
        commit_every: int,
        total: int,
        done: set[str],
        progress: ProgressFn | None,
    ) -> None:
        if commit_every < 1:
            raise InputError("--commit-every must be at least 1.", param="commit_every")
        self.output = output
        self.identity = identity
        self.commit_every = commit_every
        self.done = done  # committed before this run
        self.seen: set[str] = set()  # claimed in this run
        self.report = CorpusReport()
        self.progress = progress
        self.total = total
        self.next_index = output.next_index()
        self.buffer: tuple[list[str], list[np.ndarray], list[int]] = ([], [], [])
        self.buffered = 0
        self.committed = 0
        self.start = time.perf_counter()

    def claim(self, ids: list[str]) -> list[int]:
        """Positions in ``ids`` to embed: new ids, each once (the first record with an id wins)."""
        keep = []
        for k, i in enumerate(ids):
            self.report.records += 1
            if i in self.done:
                self.report.already_done += 1
            elif i in self.seen:
                self.report.duplicates += 1
                if len(self.report.duplicate_examples) < 5:
                    self.report.duplicate_examples.append(i)
            else:
                self.seen.add(i)
                keep.append(k)
        return keep

    def add(self, ids: list[str], vectors: np.ndarray, tokens: list[int], *, claimed: bool = True) -> None:
        if not claimed:
            keep = self.claim(ids)
            ids = [ids[k] for k in keep]
            vectors = vectors[keep]
            tokens = [tokens[k] for k in keep]
        if not ids:
            return
        b_ids, b_vecs, b_toks = self.buffer
        b_ids.extend(ids)
        b_vecs.append(np.asarray(vectors, dtype=np.float32))
        b_toks.extend(int(t) for t in tokens)
        self.buffered += len(ids)
        self.report.embedded += len(ids)
        self.report.tokens += int(sum(tokens))
        while self.buffered >= self.commit_every:
            self._commit(self.commit_every)
        self._tell()

    def _commit(self, n: int) -> None:
        b_ids, b_vecs, b_toks = self.buffer
        matrix = np.concatenate(b_vecs) if len(b_vecs) > 1 else b_vecs[0]
        self.output.write_part(self.next_index, b_ids[:n], matrix[:n], b_toks[:n], self.identity)
        self.next_index += 1
        self.report.parts_written += 1
        self.committed += n
        rest = matrix[n:]
        self.buffer = (b_ids[n:], [rest] if len(rest) else [], b_toks[n:])
        self.buffered -= n

    def _tell(self) -> None:
        if self.progress is not None:
            r = self.report
            self.progress(
                Progress(
                    self.total,
                    r.embedded,
                    self.committed,
                    r.tokens,
                    r.parts_written,
                    time.perf_counter() - self.start,
                )
            )

    def close(self) -> CorpusReport:
        if self.buffered:
            self._commit(self.buffered)
            self._tell()
        self.report.seconds = time.perf_counter() - self.start
        self.report.rows_in_output = len(self.done) + self.committed
        return self.report


def open_run(
    output: CorpusOutput,
    identity: CorpusIdentity,
    source: CorpusInput,
    *,
    overwrite: bool,
    commit_every: int,
    progress: ProgressFn | None,
) -> Committer:
    """Identity checked (or the output cleared), a killed run's temp files removed, the done
    ids read: the committer of a run. Call with the output's lock held."""
    for warning in output.check_identity(identity, overwrite=overwrite):
        log.warning(
            "%s: the same model on another engine (%s); vectors agree to about 1e-3 cosine",
            output.folder,
            warning,
        )
    output.clean_temp()
    done = output.done_ids()
    total = max(source.count() - len(done), 0)
    return Committer(output, identity, commit_every=commit_every, total=total, done=done, progress=progress)


def locked(output: CorpusOutput) -> Any:
    """The output's writer lock, or an error naming the folder when another run holds it."""
    from filelock import Timeout

    lock = output.lock()
    try:
        lock.acquire()
    except Timeout:
        raise InputError(
            f"another qembed embed-corpus run is writing {output.folder}; wait for it or choose another --out.",
            param="out",
        ) from None
    return lock


def run_local(
    embedder: Any,
    source: CorpusInput,
    output: CorpusOutput,
    options: CorpusOptions = CorpusOptions(),
    *,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> CorpusReport:
    """Embed every record of ``source`` not yet in ``output`` with ``embedder`` (one process)."""
    if batch_tokens < 1:
        raise InputError("--batch-tokens must be at least 1.", param="batch_tokens")
    worker = BatchEmbedder(embedder, options)
    identity = options.identity(embedder)
    lock = locked(output)
    try:
        committer = open_run(
            output, identity, source, overwrite=overwrite, commit_every=commit_every, progress=progress
        )
        step: list[tuple[list[str], Any]] = []
        step_tokens = 0

        def flush() -> None:
            nonlocal step, step_tokens
            if not step:
                return
            vectors = worker.run([p for _, p in step])
            for (ids, prepared), block in zip(step, vectors, strict=True):
                committer.add(ids, block, prepared.tokens_per_input())
            step, step_tokens = [], 0

        for ids, texts in source.blocks(READ_ROWS):
            keep = committer.claim(ids)
            if not keep:
                continue
            prepared = worker.prepare([texts[k] for k in keep])
            step.append(([ids[k] for k in keep], prepared))
            step_tokens += prepared.prompt_tokens
            if step_tokens >= batch_tokens:
                flush()
        flush()
        return committer.close()
    finally:
        lock.release()
