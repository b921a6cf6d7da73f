"""The one progress library: rich, on stderr (stdout stays data).

``progress_bar()`` is the multi-task bar of long evaluation steps; ``Bar`` is a single bar
for loops that count units (windows embedded, export steps done), with ``update`` /
``note`` / ``close``. rich is imported when a bar is made, not when this module is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def progress_bar(console: Console | None = None, *, transient: bool = False, notes: bool = False) -> Progress:
    """Units done / total, elapsed and remaining time. Cached texts start the bar filled.

    ``notes``: a last column with each task's ``note`` field (every task must then have one).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *([TextColumn("{task.fields[note]}")] if notes else []),
        console=console or Console(stderr=True),
        transient=transient,
    )


class Bar:
    """One bar: ``update(n)`` after each unit of work, ``note(text)`` for what runs now,
    ``close()`` at the end (also on errors). ``enabled=False`` makes every call a no-op."""

    def __init__(
        self, description: str, total: int, *, enabled: bool = True, console: Console | None = None
    ) -> None:
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            self._progress = progress_bar(console, notes=True)
            self._task = self._progress.add_task(description, total=total, note="")
            self._progress.start()

    def update(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, note=text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
