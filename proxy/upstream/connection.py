"""One keep-alive HTTP/1.1 connection to an upstream, its responses parsed by httptools (llhttp).

Strategy: a connection carries one exchange at a time (no pipelining). `begin` writes the
request head; the parser's callbacks fill in the status, the raw header pairs and the body
chunks, and wake the coroutine waiting for them (`wait_head`, `read_all`, `read_chunk`); a
body writer waits in `drain` on a future of its own.
Any failure (the upstream closing early, a parse error, the pool's deadline) is stored once in
`error` and raised to that waiter; a failed connection is never reused.

Strictness: the upstream speaks only when spoken to. A byte that arrives while no request is
outstanding, or after the response to the outstanding one is complete (a second response glued
to the first, a late answer to a smuggled request), fails the connection: it is closed, never
reused, and the surplus is never merged into a response or handed to the next request. The
response that was already complete is still delivered whole.

Invariants:
- `reusable` only after a complete response that the upstream allows to be kept alive, on a
  connection that saw no error and was not closed; everything else is closed by the pool.
- The body buffer is bounded: past `_HIGH_WATER` unread bytes the socket stops being read
  until the consumer catches up, so a slow client never makes the gateway buffer a download.
- 1xx responses are skipped; a HEAD response ends at its headers (and its connection is not
  reused: llhttp would wait for the body its Content-Length announces).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before the response was complete."""


class UpstreamProtocolError(ConnectionError):
    """The upstream's response is not valid HTTP/1.1."""


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_bad_coding", "_buffered", "_chunks", "_drain_waiter", "_expecting", "_has_length",
        "_head_done",
        "_informational",
        "_loop", "_no_body", "_on_close", "_parser", "_read_paused", "_waiter", "_write_paused",
        "closed", "complete", "content_length", "error", "has_connection", "headers",
        "idle_since", "keep_alive", "reason", "received", "reused", "status", "transport",
    )  # fmt: skip

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_close: Callable[[UpstreamConnection], None]
    ) -> None:
        self._loop = loop
        self._on_close = on_close
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._write_paused = False
        self._read_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._expecting = False  # a request is outstanding and its response is not complete
        self._reset(no_body=False)

    def _reset(self, *, no_body: bool) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.has_connection = False  # a Connection header, which may list more to drop
        self.keep_alive = False
        self.complete = False
        self.received = False
        self.error: BaseException | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._head_done = False
        self._has_length = False
        self._bad_coding = False
        self._informational = False
        self._no_body = no_body

    # -- the exchange, driven by forward.exchange() ------------------------------------------

    def begin(self, head: bytes, *, head_request: bool) -> None:
        """Start an exchange: send the request head (the body, if any, follows by `write`)."""
        self._reset(no_body=head_request)
        self._expecting = True
        assert self.transport is not None
        self.transport.write(head)

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark (the body writer
        waits here while the exchange waits for the response: each has its own future)."""
        while self._write_paused and self.error is None:
            self._drain_waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._drain_waiter = None
        if self.error is not None:
            raise self.error

    async def wait_head(self) -> None:
        while not self._head_done and self.error is None:
            await self._wait()
        if not self._head_done:
            assert self.error is not None
            raise self.error

    async def read_all(self) -> bytes:
        while not self.complete and self.error is None:
            await self._wait()
        if not self.complete:
            assert self.error is not None
            raise self.error
        chunks = self._chunks
        return chunks.popleft() if len(chunks) == 1 else b"".join(chunks)

    async def read_chunk(self) -> bytes:
        """The next body chunk; b"" once the body is complete."""
        while not self._chunks and not self.complete and self.error is None:
            await self._wait()
        if self._chunks:
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            if self._read_paused and self._buffered <= _LOW_WATER and self.transport is not None:
                self._read_paused = False
                self.transport.resume_reading()
            return chunk
        if self.complete:
            return b""
        assert self.error is not None
        raise self.error

    def fail(self, exc: BaseException) -> None:
        """End the exchange with `exc` (a deadline, a client gone): the connection is dropped."""
        if self.error is None:
            self.error = exc
        self.close()
        self._wake()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self._closed()

    async def _wait(self) -> None:
        self._waiter = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._drain_waiter is not None:
            self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _closed(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close(self)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._expecting:
            self.fail(UpstreamProtocolError("upstream sent bytes with no request outstanding"))
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            self.fail(UpstreamProtocolError("upstream sent bytes after a complete response"))
        except httptools.HttpParserError as exc:
            self.fail(UpstreamProtocolError(f"invalid response from upstream: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides what the EOF means

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_done and not self.complete and not self._has_length and self.error is None:
            # No Content-Length, not chunked: the body ran until the upstream closed.
            self.complete = True
            self.keep_alive = False
        elif not self.complete and self.error is None:
            self.error = UpstreamClosed(
                "upstream closed the connection"
                + (" before responding" if not self.received else " mid-response")
            )
            if exc is not None:
                self.error.__cause__ = exc
        self._closed()
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # -- httptools callbacks (only on_message_begin raises, to stop the parser) ---------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise UpstreamProtocolError("a second response to one request")

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer field: dropped, never relayed as a header
        self.headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            self._has_length = True
            self.content_length = int(value)  # llhttp has validated it
        elif lname == b"transfer-encoding":
            self._has_length = True
            # Relayed de-chunked without its coding, a gzip body would reach the client
            # unlabelled: only `chunked` alone is accepted from upstreams.
            if value.strip().lower() != b"chunked":
                self._bad_coding = True
        elif lname == b"connection":
            self.has_connection = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            self._informational = True
            self.headers = []
            self.reason = b""
            self._has_length = False
            self.has_connection = False
            self.content_length = None
            return
        if self._bad_coding:
            self.fail(UpstreamProtocolError("upstream used a transfer coding other than chunked"))
            return
        self.status = status
        self._head_done = True
        if self._no_body:
            self.complete = True
            self.keep_alive = False
            self._expecting = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._no_body:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if not self._no_body:
            self.complete = True
            self.keep_alive = self._parser.should_keep_alive()
            self._expecting = False
        self._wake()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("error" if self.error else "open")
        return f"<UpstreamConnection {state} status={self.status} reused={self.reused}>"
