"""uvicorn's h11 protocol with the limits a server facing the network needs.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but a fresh
connection that sends nothing, or its headers one byte a minute, or a body that stops
half-way, stays open forever (and each holds a file descriptor and its buffers). Here:

- ``--request-read-timeout``: the request's headers must be complete this many seconds
  after the connection opens (or, on a kept-alive connection, after its first byte); the
  body may pause at most this long between two reads. Otherwise the connection is closed
  (an unfinished body is logged as a 408).
- ``--max-connections``: a connection over the cap is answered 503 (OpenAI error body,
  ``Connection: close``) and closed before anything is read.

Once a request has been read completely no timer runs: computing the answer takes as long
as it takes (``--shutdown-timeout`` bounds it at shutdown).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

_BUSY_BODY = orjson.dumps(
    {
        "error": {
            "message": "Too many open connections (--max-connections); retry later.",
            "type": "server_error",
            "param": None,
            "code": "too_many_connections",
        }
    }
)
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"retry-after: 1\r\ncontent-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class QembedH11Protocol(H11Protocol):
    """``H11Protocol`` plus the read timeout and the connection cap (see the module doc)."""

    read_timeout: float = 30.0
    max_connections: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    # -- the cap ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.logger.warning(
                "refused a connection: %d open (--max-connections %d)",
                len(self.connections) - 1,
                self.max_connections,
            )
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        self._arm(self.read_timeout)  # the headers must come in time

    # -- the read timeout ------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.read_timeout)  # between two reads of the body
        elif state is h11.IDLE:
            if self._read_timer is None:  # the first bytes of a request on a kept-alive connection
                self._arm(self.read_timeout)
        else:  # DONE (read completely: the app works), MUST_CLOSE, ERROR
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # the keep-alive timer takes over
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if (
            self.conn.their_state is h11.SEND_BODY
            and self.cycle is not None
            and not self.cycle.response_complete
        ):
            self.scope["state"]["read_timeout"] = True  # Observe logs it as 408
            self.logger.info(
                "closed a connection: the request body stalled for %.0f s (--request-read-timeout)",
                self.read_timeout,
            )
        elif self.conn.their_state is not h11.IDLE:
            return  # a request read completely: no timeout while it is answered
        self.transport.close()


def protocol_class(*, read_timeout: float, max_connections: int | None) -> type[QembedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "QembedH11Protocol",
        (QembedH11Protocol,),
        {"read_timeout": read_timeout, "max_connections": max_connections},
    )
