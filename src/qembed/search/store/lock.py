"""One writer at a time per index: a lock file in the index folder, and who holds it.

Why a lock when SQLite already serialises commits: an indexing run is many commits, and
two runs on one index would each plan "everything is new" before either committed, so
both would embed everything (the issue that asked for this). The lock is held for a
whole run (``qembed index``, one ``POST /v1/index`` request, ``SearchIndex.index``); a
second writer waits up to its timeout and then fails with ``IndexBusy`` naming the holder
(pid, host, what, since), which the holder writes to a sidecar file next to the lock.

The lock is ``filelock``'s OS lock (``fcntl.flock``): it is released when the holder's
process dies, so a killed run never leaves the index locked; a stale sidecar is only text.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from qembed.errors import IndexBusy

LOCK_FILE = "writer.lock"
HOLDER_FILE = "writer.lock.json"
DEFAULT_TIMEOUT = 30.0  # seconds a second writer waits before IndexBusy


def describe_holder(folder: Path) -> str:
    """Who holds the lock, from the sidecar: 'pid 123 on host h (qembed index, since 12:00:01 UTC)'."""
    try:
        info = json.loads((folder / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process (it did not say who)"
    since = time.strftime("%H:%M:%S UTC", time.gmtime(float(info.get("since", 0))))
    return f"pid {info.get('pid')} on host {info.get('host')} ({info.get('what', 'a writer')}, since {since})"


class WriterLock:
    """The writer lock of one index folder; re-entrant within a process (one holder count)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        # thread_local=False: the /v1/index route acquires and releases on different threadpool threads.
        self._lock = FileLock(str(folder / LOCK_FILE), thread_local=False)
        self._guard = threading.Lock()
        self._depth = 0

    @contextmanager
    def hold(self, timeout: float = DEFAULT_TIMEOUT, what: str | None = None) -> Iterator[None]:
        with self._guard:
            nested = self._depth > 0
            self._depth += 1
        try:
            if not nested:
                try:
                    self._lock.acquire(timeout=max(0.0, timeout))
                except Timeout:
                    raise IndexBusy(
                        f"index {self.name!r} is being written by {describe_holder(self.folder)}; waited {timeout:g} s. "
                        "Wait for that run to finish (or stop it), then try again."
                    ) from None
                self._write_holder(what)
            yield
        finally:
            with self._guard:
                self._depth -= 1
                last = self._depth == 0
            if last and self._lock.is_locked:
                try:
                    (self.folder / HOLDER_FILE).unlink(missing_ok=True)
                finally:
                    self._lock.release()

    def _write_holder(self, what: str | None) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "what": what or _command(),
            "since": time.time(),
        }
        tmp = self.folder / f"{HOLDER_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(info), encoding="utf-8")
        os.replace(tmp, self.folder / HOLDER_FILE)


def _command() -> str:
    argv = [os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:3]]
    return " ".join(a for a in argv if a)
