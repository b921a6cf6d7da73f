"""Stop working for a client that went away.

A reverse proxy's read timeout, an SDK timeout or a closed browser tab drop the connection
while the request waits for the model. Starlette keeps running the handler, so without
this its windows would be computed in full (and the SDK's retries would triple the work).
``unless_disconnected`` awaits the work and, at the same time, the ASGI ``http.disconnect``
message; when the client leaves first the work is cancelled: the batch queue drops the
request's unstarted windows (``BatchQueue.dropped_windows``) and the request is answered
(and logged) as 499.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from qembed.errors import ClientDisconnected

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    """Returns when the client has closed the connection (the body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelled (``ClientDisconnected``) if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnected(
        "The client closed the connection before its vectors were ready; its queued work was dropped."
    )
