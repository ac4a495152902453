"""Lingering close: after an error answer on a connection it closes itself, the gateway
half-closes and discards what the client still sends, then closes (nginx's `lingering_close`).

Why: a socket closed with unread bytes in its receive buffer, or sent bytes after it closed,
answers with a TCP reset. A client still sending when the answer comes (the rest of a slow
head, bytes after a refused one, pipelined requests) then reads a reset instead of the end of
the answer: a client that writes before it reads loses the answer it had already received
(asyncio's StreamReader, for one, raises the reset first), and on a real network the reset also
drops whatever of the answer the gateway's kernel had not sent yet.

Strategy: once the answer is written, `write_eof()` (sent after whatever of the answer is still
buffered) tells the client the answer is over; the bytes that still come are counted and
dropped; the connection closes when the client closes, when it has been silent for
LINGER_IDLE_SECONDS, when LINGER_SECONDS have passed or once LINGER_MAX_BYTES were dropped,
whichever comes first. One timer, re-armed when it fires early, so a chunk costs a clock read.

Invariant: nothing a client does holds a connection longer than LINGER_SECONDS after its
answer; the connection keeps its place under the connection cap until it closes.
"""

from __future__ import annotations

import asyncio

LINGER_SECONDS = 2.0  # the most a connection lingers after its answer (nginx: lingering_time)
LINGER_IDLE_SECONDS = 0.5  # ... ended sooner by a client silent this long (lingering_timeout)
LINGER_MAX_BYTES = 1 << 20  # ... or once this much was dropped: past it, the client is flooding


class LingeringClose:
    """One connection's lingering, from its answer written to its close."""

    __slots__ = ("_deadline", "_ended", "_left", "_loop", "_seen", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        self._loop = loop
        now = loop.time()
        self._deadline = now + LINGER_SECONDS
        self._seen = now  # when the client's last bytes arrived
        self._left = LINGER_MAX_BYTES
        self._ended: asyncio.Future[None] = loop.create_future()
        self._timer = loop.call_at(now + LINGER_IDLE_SECONDS, self._check)
        try:
            if transport.can_write_eof() and not transport.is_closing():
                transport.write_eof()
        except OSError:  # the client is gone already (reset): nothing to linger for
            self.end()

    def discard(self, data: bytes) -> None:
        """Bytes the client sent after its answer: dropped, counted."""
        self._seen = self._loop.time()
        self._left -= len(data)
        if self._left < 0:
            self.end()

    async def wait(self) -> None:
        """Until the lingering ends; ends it if the wait is cancelled."""
        try:
            await self._ended
        finally:
            self.end()

    def end(self) -> None:
        """End the lingering now: the client closed, or the server is shutting down."""
        self._timer.cancel()
        if not self._ended.done():
            self._ended.set_result(None)

    def _check(self) -> None:
        wake = min(self._seen + LINGER_IDLE_SECONDS, self._deadline)
        if self._loop.time() < wake:
            self._timer = self._loop.call_at(wake, self._check)
        else:
            self.end()

    def __repr__(self) -> str:
        state = "ended" if self._ended.done() else "lingering"
        left = max(self._deadline - self._loop.time(), 0.0)
        return f"<LingeringClose {state}, {left:.2f}s and {max(self._left, 0)} bytes left>"
