"""The batch queue: windows of many requests wait here until the model worker packs them.

Why a queue of *windows* and not of requests: a client request may carry 2048 short
texts or one 100k-token document; the model wants batches of similar-length rows under a
token budget. So every request is cut into windows (``Embedder.prepare``), the windows
of all waiting requests are packed together (``qembed.encode.batching``), and each
request gets its vectors back when its last window is done.

Threads: ``submit`` runs on the asyncio loop; ``next_batch``/``complete``/``fail`` run on
the one model thread (``qembed.serving.worker``). Shared state is guarded by one lock;
results go back to the loop with ``loop.call_soon_threadsafe`` on asyncio futures.

Guarantees:

- a request gets all its window vectors or one exception, never part;
- an exception in a batch fails exactly the requests that had a window in it (their
  other windows are dropped, not computed);
- fair: batches alternate between the request with the fewest tokens left (so a short
  query is not stuck behind a 1 MB document: it waits about one batch) and the oldest
  request (so a big request still gets every other batch: it finishes within about twice
  its time alone, however many small requests arrive); ``bulk`` requests yield the first
  kind of turn to interactive ones;
- a request whose caller went away (its ``submit`` cancelled) loses its unstarted windows;
  they are counted in ``dropped_windows``;
- admission control: past ``max_concurrent_requests`` requests or ``max_queued_tokens``
  waiting tokens, ``QueueFull`` (the server answers 429 with Retry-After).

No web framework is imported here: the HTTP layer (``qembed.server``) and anything else
that serves embeddings from one process use it as it is.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from qembed.encode.batching import plan_batches
from qembed.encode.windows import Window
from qembed.errors import InternalError, ModelRunError, QueueFull, Unavailable


@dataclass(eq=False)
class Job:
    """One request's windows on their way through the queue."""

    windows: Sequence[Window]
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    pending: list[int] = field(default_factory=list)  # window indices not yet in a batch
    remaining: int = 0  # windows not yet computed
    vectors: np.ndarray | None = None
    dead: bool = False  # failed or cancelled: drop what is left
    bulk: bool = False  # priority "bulk": served after every interactive request (still never starved)
    seq: int = 0  # arrival order
    pending_tokens_left: int = 0  # tokens of ``pending`` (kept up to date; the scheduler sorts on it)

    @property
    def pending_tokens(self) -> int:
        return sum(len(self.windows[i].ids) for i in self.pending)

    def fail(self, exc: BaseException) -> None:
        """Resolve with ``exc`` on the job's loop (once; later results are ignored)."""
        self.dead = True
        self.loop.call_soon_threadsafe(_resolve, self.future, None, exc)


@dataclass
class Batch:
    """Windows the worker runs together, and where each result goes."""

    windows: list[Window]
    slots: list[tuple[Job, int]]

    @property
    def tokens(self) -> int:
        return sum(len(w.ids) for w in self.windows)

    @property
    def padded_tokens(self) -> int:
        return len(self.windows) * max(len(w.ids) for w in self.windows)


def _resolve(future: asyncio.Future[np.ndarray], value: np.ndarray | None, exc: BaseException | None) -> None:
    """Runs on the loop: set a future unless its awaiting request was cancelled."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)  # type: ignore[arg-type]


class BatchQueue:
    """Windows waiting for the model, packed into length-sorted batches under a token budget."""

    def __init__(
        self,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        max_queued_tokens: int,
        max_concurrent_requests: int,
    ) -> None:
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queued_tokens = max_queued_tokens
        self.max_concurrent_requests = max_concurrent_requests
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: deque[Job] = deque()  # jobs with pending windows, oldest first
        self._queued_windows = 0
        self._queued_tokens = 0
        self._active_requests = 0
        self._closed = False
        self._paused = False
        self._live: set[Job] = set()  # submitted and not resolved: what abort() fails
        self._seq = 0
        self._turn = 0  # even: fewest tokens left first; odd: oldest first
        self.dropped_windows = 0  # windows never computed because their request was cancelled
        self.cancelled_requests = 0
        self.tokens_per_second: float = 0.0  # set by the worker, used for Retry-After

    # -- figures (read without the lock: plain ints, used by gauges and tests) ------------
    @property
    def queued_windows(self) -> int:
        return self._queued_windows

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def queued_requests(self) -> int:
        return len(self._jobs)

    @property
    def active_requests(self) -> int:
        return self._active_requests

    @property
    def closed(self) -> bool:
        return self._closed

    # -- loop side ------------------------------------------------------------------------
    def _retry_after(self) -> int:
        """Seconds until the backlog is likely gone (at least 1, at most 60)."""
        if self.tokens_per_second <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._queued_tokens / self.tokens_per_second))))

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of ``max_concurrent_requests`` request slots for the block's duration."""
        with self._lock:
            if self._closed:
                raise Unavailable("The server is shutting down; retry on another instance.")
            if self._active_requests >= self.max_concurrent_requests:
                raise QueueFull(
                    f"Too many requests in flight ({self._active_requests}, limit {self.max_concurrent_requests}, "
                    "--max-concurrent-requests); retry later.",
                    retry_after=self._retry_after(),
                )
            self._active_requests += 1
        try:
            yield
        finally:
            with self._lock:
                self._active_requests -= 1

    async def submit(
        self, windows: Sequence[Window], *, admission: bool = True, bulk: bool = False
    ) -> np.ndarray:
        """Queue one request's windows; return their pooled vectors ``[len(windows), dim]``.

        With ``admission``, refuse (``QueueFull``) when the waiting tokens would pass
        ``max_queued_tokens``; an empty queue always takes a request, however large, so
        that every request the payload limit lets in can be served.
        """
        if not windows:
            raise InternalError("submit needs at least one window")
        loop = asyncio.get_running_loop()
        job = Job(windows=windows, future=loop.create_future(), loop=loop, bulk=bulk)
        tokens = sum(len(w.ids) for w in windows)
        with self._lock:
            if self._closed:
                raise Unavailable("The server is shutting down; retry on another instance.")
            if admission and self._queued_tokens and self._queued_tokens + tokens > self.max_queued_tokens:
                raise QueueFull(
                    f"The queue is full ({self._queued_tokens} tokens waiting, this request has {tokens}, "
                    f"limit {self.max_queued_tokens}, --max-queued-tokens); retry later.",
                    retry_after=self._retry_after(),
                )
            # Longest first inside a request: its windows pack with each other well.
            job.pending = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
            job.remaining = len(windows)
            job.pending_tokens_left = tokens
            self._seq += 1
            job.seq = self._seq
            self._jobs.append(job)
            self._live.add(job)
            self._queued_windows += len(windows)
            self._queued_tokens += tokens
            self._wake.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._lock:
                dropped = len(job.pending)
                self.dropped_windows += dropped
                self.cancelled_requests += 1
            self._drop(job)
            raise
        finally:
            with self._lock:
                self._live.discard(job)

    def _drop(self, job: Job) -> None:
        """Forget a job's windows that no batch has taken yet (cancelled or failed)."""
        with self._lock:
            job.dead = True
            if job.pending:
                self._queued_windows -= len(job.pending)
                self._queued_tokens -= job.pending_tokens
                job.pending = []
                job.pending_tokens_left = 0
            try:
                self._jobs.remove(job)
            except ValueError:
                pass

    # -- test and operations hooks --------------------------------------------------------
    def pause(self) -> None:
        """Hold the worker before its next batch (requests keep queueing). Used by tests to
        make cross-request batching deterministic, and by operators to drain a replica."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._wake.notify_all()

    def close(self) -> None:
        """Refuse new work; the worker still finishes every window already queued."""
        with self._lock:
            self._closed = True
            self._paused = False
            self._wake.notify_all()

    def abort(self, exc: BaseException) -> int:
        """Close, and fail every request not finished yet with ``exc`` (the shutdown deadline
        passed): queued windows are dropped, a batch already running is left to finish and
        its results ignored. Returns the number of requests failed."""
        with self._lock:
            self._closed = True
            self._paused = False
            jobs = [job for job in self._live if not job.dead]
            for job in self._jobs:
                job.pending = []
                job.pending_tokens_left = 0
            self._jobs.clear()
            self._queued_windows = 0
            self._queued_tokens = 0
            self._wake.notify_all()
        for job in jobs:
            job.fail(exc)
        return len(jobs)

    # -- worker side ----------------------------------------------------------------------
    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """Block until a batch is ready; ``None`` once closed and empty (or on timeout)."""
        with self._lock:
            while not self._jobs or (self._paused and not self._closed):
                if self._closed and not self._jobs:
                    return None
                if not self._wake.wait(timeout):
                    return None
            return self._take()

    def _order(self) -> list[Job]:
        """Whose turn it is (lock held): alternately the request with the fewest tokens left
        (interactive before bulk) and the oldest one; the first job of the order is served."""
        jobs = list(self._jobs)
        self._turn += 1
        if len(jobs) > 1 and self._turn % 2 == 0:
            jobs.sort(key=lambda j: (j.bulk, j.pending_tokens_left, j.seq))
        return jobs

    def _take(self) -> Batch:
        """Pick the batch that holds the first waiting window of the job whose turn it is (lock held)."""
        # Candidates: waiting windows in turn order, a few batches' worth.
        cap_rows = 4 * self.max_batch_size
        cap_tokens = 4 * self.max_batch_tokens
        candidates: list[tuple[Job, int]] = []
        tokens = 0
        for job in self._order():
            for index in job.pending:
                candidates.append((job, index))
                tokens += len(job.windows[index].ids)
                if len(candidates) >= cap_rows or tokens >= cap_tokens:
                    break
            if len(candidates) >= cap_rows or tokens >= cap_tokens:
                break
        lengths = [len(job.windows[i].ids) for job, i in candidates]
        plan = plan_batches(lengths, max_tokens=self.max_batch_tokens, max_rows=self.max_batch_size)
        chosen = next(b for b in plan if 0 in b)
        slots = [candidates[i] for i in sorted(chosen)]
        taken: dict[int, set[int]] = {}
        for job, index in slots:
            taken.setdefault(id(job), set()).add(index)
        for job in {id(j): j for j, _ in slots}.values():
            gone = taken[id(job)]
            job.pending = [i for i in job.pending if i not in gone]
            job.pending_tokens_left -= sum(len(job.windows[i].ids) for i in gone)
        while self._jobs and not self._jobs[0].pending:
            self._jobs.popleft()
        if any(not j.pending for j in self._jobs):
            self._jobs = deque(j for j in self._jobs if j.pending)
        batch = Batch(windows=[job.windows[i] for job, i in slots], slots=slots)
        self._queued_windows -= len(slots)
        self._queued_tokens -= batch.tokens
        return batch

    def complete(self, batch: Batch, vectors: np.ndarray) -> None:
        """Hand each window's vector to its job; finished jobs resolve on their loop."""
        if len(vectors) != len(batch.windows):
            self.fail(
                batch,
                ModelRunError(f"The model returned {len(vectors)} vectors for {len(batch.windows)} windows."),
            )
            return
        for (job, index), vector in zip(batch.slots, vectors, strict=True):
            if job.dead:
                continue
            if job.vectors is None:
                job.vectors = np.empty((len(job.windows), vectors.shape[1]), dtype=np.float32)
            job.vectors[index] = vector
            job.remaining -= 1
            if job.remaining == 0:
                job.loop.call_soon_threadsafe(_resolve, job.future, job.vectors, None)

    def fail(self, batch: Batch, exc: BaseException) -> None:
        """Fail every job with a window in ``batch`` (once), and drop their other windows."""
        seen: set[int] = set()
        for job, _ in batch.slots:
            if id(job) in seen or job.dead:
                continue
            seen.add(id(job))
            self._drop(job)
            job.fail(exc)
