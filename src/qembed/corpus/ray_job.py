"""A corpus job on a Ray cluster: Ray Data reads the input, an actor pool of embedders
embeds it, and the driver commits part files exactly as one machine does.

The pipeline: ``read_json`` / ``read_parquet`` -> ``map_batches`` with ``--workers`` embedder
actors (each loads the model once, in its constructor; batches are rows sized for
``--batch-tokens`` from the token count of a sample) -> ``iter_batches`` on the driver ->
``Committer`` (the same part files, identity and resume as ``run_local``).

Why the driver writes: a part is committed by one rename in one folder, and the resume
bookkeeping (which ids are done) lives in one place, so a kill anywhere (driver, an actor,
the cluster) leaves whole parts only, and a re-run (with or without Ray) goes on from them.
The vectors pass through the driver once (4 KB per 1024-d vector), which is small next to
the model's work.

Resume: the ids of the committed parts go into the object store once, and each actor
drops them before embedding. Duplicates in the input can only be found after embedding
(two actors may each get one); the driver keeps the first to arrive and counts the rest.

The model's identity is taken from a probe task with the actors' resources (same device,
so the same dtype), before anything is embedded: a mismatch with the existing output is
refused first. Every node must have qembed and the model (the same hub revision) installed,
and must be able to read INPUT (a shared filesystem); OUTPUT is the driver's folder.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from typing import Any

import numpy as np

from qembed.corpus.job import BatchEmbedder, CorpusOptions, CorpusReport, ProgressFn, locked, open_run
from qembed.corpus.output import CorpusIdentity, CorpusOutput
from qembed.corpus.records import CorpusInput, Fields, check_id, check_text
from qembed.errors import InputError, QembedError
from qembed.settings import Settings

log = logging.getLogger(__name__)

SAMPLE = 256  # records whose mean token count sizes the actors' batches
MIN_BLOCK_BYTES = 1024
CONTEXT_FIELDS = ("enable_progress_bars", "print_on_execution_start", "target_max_block_size")


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(
            "--ray needs Ray Data: pip install 'qembed-server[ray]' (ray[serve,data] pinned), or run without --ray.",
            param="ray",
        ) from None
    return ray


def _worker_settings(settings: Settings, cpus_per_worker: float) -> Settings:
    """Each actor's torch uses the CPUs it reserved, unless --threads says otherwise
    (N actors of all-core torch on one machine fight over the cores)."""
    if settings.threads is not None:
        return settings
    return settings.overlay(threads=max(1, int(cpus_per_worker)))


def _probe(settings: Settings, options: CorpusOptions, texts: list[str]) -> tuple[CorpusIdentity, float]:
    """On a worker: the identity of the vectors and the mean tokens per document of a sample."""
    from qembed.embedding.embedder import Embedder

    embedder = Embedder(settings=settings)
    tokens = BatchEmbedder(embedder, options).prepare(texts).tokens_per_input() if texts else [1]
    return options.identity(embedder), float(np.mean(tokens))


class EmbedActor:
    """One Ray Data actor: the model loaded once; a batch of records in, id/vector/tokens out
    (ids already committed dropped before embedding)."""

    def __init__(self, settings: Settings, options: CorpusOptions, fields: Fields, done: list[Any]) -> None:
        import ray

        from qembed.embedding.embedder import Embedder

        self.worker = BatchEmbedder(Embedder(settings=settings), options)
        self.fields = fields
        self.done: frozenset[str] = ray.get(done[0])  # boxed: Ray Data passes constructor args as they are
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        """Rows of this batch still to embed -> id, vector, tokens, and which actor embedded them."""
        raw_ids = batch.column(self.fields.id).to_pylist()
        raw_texts = batch.column(self.fields.text).to_pylist()
        ids: list[str] = []
        texts: list[str] = []
        for raw_id, raw_text in zip(raw_ids, raw_texts, strict=True):
            i = check_id(raw_id, f"a record (id {raw_id!r})", self.fields)
            if i in self.done:
                continue
            ids.append(i)
            texts.append(check_text(raw_text, f"record {i!r}", self.fields))
        if not ids:
            dim = self.worker.resolved.dimensions or self.worker.embedder.dimension
            return {
                "id": np.array([], dtype=object),
                "vector": np.zeros((0, dim), np.float32),
                "tokens": np.zeros(0, np.int32),
                "worker": np.array([], dtype=object),
            }
        vectors, tokens = self.worker.embed(texts)
        return {
            "id": np.array(ids, dtype=object),
            "vector": vectors,
            "tokens": np.asarray(tokens, dtype=np.int32),
            "worker": np.array([self.name] * len(ids), dtype=object),
        }


def _qembed_cause(exc: BaseException) -> QembedError | None:
    """The qembed error inside Ray's wrappers (RayTaskError, UserCodeException), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, QembedError):
            return current
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return None


def connect(address: str, *, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (``local``: start one in this process). True when this
    call started Ray (and so should shut it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="warning", log_to_driver=False)
    else:
        try:
            ray.init(address=address, logging_level="warning", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(
                f"could not join the Ray cluster at {address!r} ({exc}). Start one with `ray start --head` and give "
                "its address (ray://HEAD:10001, or auto on a node of the cluster), or use --ray local.",
                param="ray",
            ) from None
    return True


def run_ray(
    address: str,
    settings: Settings,
    source: CorpusInput,
    output: CorpusOutput,
    options: CorpusOptions = CorpusOptions(),
    *,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    batch_tokens: int = 32768,
    commit_every: int = 4096,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> CorpusReport:
    """Embed every record of ``source`` not yet in ``output`` on the Ray cluster at ``address``."""
    if workers < 1:
        raise InputError("--workers must be at least 1.", param="workers")
    if batch_tokens < 1:
        raise InputError("--batch-tokens must be at least 1.", param="batch_tokens")
    ray = _import_ray()
    sample = [t for _, texts in _first_blocks(source) for t in texts]  # bad fields fail here, on the driver
    lock = locked(output)
    local_cpus = max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker) + 1)
    saved: dict[str, Any] = {}
    try:
        started = connect(address, num_cpus=local_cpus if address == "local" else None)
    except BaseException:
        lock.release()
        raise
    try:
        ctx = ray.data.DataContext.get_current()
        saved = {
            k: getattr(ctx, k) for k in CONTEXT_FIELDS
        }  # put back for other Ray Data work in this process
        ctx.enable_progress_bars = False  # qembed's bar counts documents and tokens
        ctx.print_on_execution_start = False
        worker_settings = _worker_settings(settings, cpus_per_worker)
        resources = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker}
        probe = ray.remote(_probe).options(**resources)
        try:
            identity, mean_tokens = ray.get(probe.remote(worker_settings, options, sample))
        except Exception as exc:
            cause = _qembed_cause(exc)
            raise (cause or exc) from None
        committer = open_run(
            output, identity, source, overwrite=overwrite, commit_every=commit_every, progress=progress
        )
        rows = max(1, int(batch_tokens / max(mean_tokens, 1.0)))
        # Ray Data hands an actor whole blocks, and a read makes one block per file up to 128 MiB:
        # a single JSONL file would feed one actor only. Blocks of about one batch spread the work.
        ctx.target_max_block_size = max(MIN_BLOCK_BYTES, int(rows * _mean_bytes(sample)))
        done_ref = ray.put(frozenset(committer.done))
        fields = source.fields
        paths = [str(f) for f in source.files]
        if source.kind == "parquet":
            ds = ray.data.read_parquet(paths, columns=[fields.id, fields.text])
        else:
            ds = ray.data.read_json(paths, lines=True).select_columns([fields.id, fields.text])
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={
                "settings": worker_settings,
                "options": options,
                "fields": fields,
                "done": [done_ref],
            },
            batch_size=rows,
            batch_format="pyarrow",
            # one block at a time per actor: an actor that loaded its model first must not queue the
            # blocks of the others (what it prefetches is not worth an idle actor)
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            **resources,
        )
        per_worker: dict[str, int] = {}
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                ids = [str(i) for i in batch["id"]]
                for worker in batch["worker"]:
                    per_worker[str(worker)] = per_worker.get(str(worker), 0) + 1
                committer.add(
                    ids, np.asarray(batch["vector"], dtype=np.float32), list(batch["tokens"]), claimed=False
                )
        except Exception as exc:
            cause = _qembed_cause(exc)
            if cause is None:
                raise
            raise cause from None
        report = committer.close()
        # the actors dropped the already-committed ids: count them from the input, as run_local does
        report.already_done = len(committer.done)
        report.records = report.embedded + report.duplicates + report.already_done
        report.rows_per_worker = per_worker
        return report
    finally:
        lock.release()
        if saved:
            for key, value in saved.items():
                setattr(ray.data.DataContext.get_current(), key, value)
        if started:
            ray.shutdown()


def _mean_bytes(sample: list[str]) -> float:
    """Bytes per record in Arrow, about: its text, plus the id and offsets."""
    return float(np.mean([len(t.encode()) for t in sample])) + 32 if sample else 256.0


def _first_blocks(source: CorpusInput) -> list[tuple[list[str], list[str]]]:
    """The first ``SAMPLE`` records (read locally: checks the fields, sizes the batches)."""
    out: list[tuple[list[str], list[str]]] = []
    n = 0
    for ids, texts in source.blocks(64):
        out.append((ids, texts))
        n += len(ids)
        if n >= SAMPLE:
            break
    return out
