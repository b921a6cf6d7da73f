"""Open a SQLite file in WAL mode safely when several processes open it at once.

Why: SQLite does not call its busy handler for ``PRAGMA journal_mode=WAL``, so two
processes (or threads) opening one new database together got an immediate "database is
locked" whatever ``timeout`` said (CI saw it with two ``qembed index`` runs on one index).
Only the setup is serialised, by a file lock beside the database; it is not held while the
database is used.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

OPEN_TIMEOUT = 120.0  # seconds an opener waits for another opener (setup takes milliseconds)


def open_lock_path(path: Path) -> Path:
    """The lock file that serialises opening ``path``."""
    return path.with_name(path.name + ".open.lock")


def connect_wal(
    path: Path, *, timeout: float, synchronous: str | None = None, **kwargs: Any
) -> sqlite3.Connection:
    """``sqlite3.connect(path)`` switched to WAL, with ``busy_timeout`` = ``timeout`` seconds.

    Raises ``TimeoutError`` when another opener held the open lock for ``OPEN_TIMEOUT`` s.
    """
    lock = FileLock(str(open_lock_path(path)), thread_local=False, is_singleton=False)
    try:
        lock.acquire(timeout=OPEN_TIMEOUT)
    except Timeout:
        raise TimeoutError(
            f"another process has been opening {path} for {OPEN_TIMEOUT:g} s; "
            f"if none is, delete {open_lock_path(path)} and try again"
        ) from None
    try:
        db = sqlite3.connect(str(path), timeout=timeout, **kwargs)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers in other processes do not block writers
            if synchronous:
                db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        except BaseException:
            db.close()
            raise
        return db
    finally:
        lock.release()
