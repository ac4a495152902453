"""A scripted raw-TCP upstream: each connection answers with the bytes a test gives it.

Strategy: the n-th connection accepted takes the n-th script, a list of `Reply` (or plain
bytes); every complete request it reads (parsed by httptools, so a body framed by
Content-Length or chunked arrives whole) is recorded and answered, in order, by the script's
next reply. A request past the end of its script, and any connection past the last script,
is closed without an answer: a test that did not expect it sees the failure. `repeat` (given
to `start`) changes that for a fuzzer: every request past its connection's script, on any
connection, is answered with that reply.

What the tests read back: `accepted` (connections opened), `requests` (every request, with
the index of the connection it came on), `received` (the raw bytes of each connection) and
`ended` (connections that are gone, either side having closed them); `wait_requests` and
`wait_ended` wait on those without sleeping. `push` writes bytes nobody asked for on a
connection (an upstream that answers twice, or speaks while idle).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httptools


@dataclass(frozen=True)
class Reply:
    """What a connection does after reading one request: wait for `hold` (if any), send
    `data`, then close the socket when `close` is set."""

    data: bytes = b""
    close: bool = False
    hold: asyncio.Event | None = None


# Read the request, then close without a byte of answer (a keep-alive connection that the
# server had already given up on).
HANG_UP = Reply(close=True)


def response(
    body: bytes = b"",
    *,
    status: str = "200 OK",
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A complete HTTP/1.1 response with a Content-Length, as bytes."""
    lines = [f"HTTP/1.1 {status}\r\n", f"Content-Length: {len(body)}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    return "".join(lines).encode() + b"\r\n" + body


@dataclass
class SeenRequest:
    connection: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        """Every value sent for `name` (case-insensitive), in order."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]


class RawUpstream:
    def __init__(self, scripts: list[list[Reply]], repeat: Reply | None = None) -> None:
        self.scripts = scripts
        self.repeat = repeat
        self.port = 0
        self.accepted = 0
        self.requests: list[SeenRequest] = []
        self.received: list[bytearray] = []
        self.ended: set[int] = set()
        self._server: asyncio.Server | None = None
        self._connections: list[_Connection] = []
        self._changed = asyncio.Event()

    @classmethod
    async def start(
        cls, *scripts: Iterable[Reply | bytes], repeat: Reply | bytes | None = None
    ) -> RawUpstream:
        upstream = cls(
            [[r if isinstance(r, Reply) else Reply(r) for r in s] for s in scripts],
            repeat=Reply(repeat) if isinstance(repeat, bytes) else repeat,
        )
        loop = asyncio.get_running_loop()
        upstream._server = await loop.create_server(upstream._accept, "127.0.0.1", 0)
        upstream.port = upstream._server.sockets[0].getsockname()[1]
        return upstream

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, connection: int) -> list[SeenRequest]:
        """The requests that came on connection `connection` (0 = the first accepted)."""
        return [r for r in self.requests if r.connection == connection]

    def push(self, connection: int, data: bytes) -> None:
        """Write `data` on connection `connection` now, whether or not a request is waiting."""
        transport = self._connections[connection].transport
        assert transport is not None
        transport.write(data)

    async def wait_requests(self, count: int, timeout: float = 10.0) -> None:
        await self._until(lambda: len(self.requests) >= count, timeout)

    async def wait_ended(self, connection: int, timeout: float = 10.0) -> None:
        await self._until(lambda: connection in self.ended, timeout)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in self._connections:
            conn.abort()
        tasks = [c.task for c in self._connections if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _accept(self) -> _Connection:
        index = self.accepted
        self.accepted += 1
        self.received.append(bytearray())
        script = self.scripts[index] if index < len(self.scripts) else None
        if script is None and self.repeat is not None:
            script = []
        conn = _Connection(self, index, script)
        self._connections.append(conn)
        self._notify()
        return conn


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: RawUpstream, index: int, script: list[Reply] | None) -> None:
        self.upstream = upstream
        self.index = index
        self.script = deque(script) if script is not None else None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: asyncio.Queue[None] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self._target = b""
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.script is None:  # a connection no script was written for
            self.abort()
            return
        self.task = asyncio.get_running_loop().create_task(self._answer())

    def data_received(self, data: bytes) -> None:
        self.upstream.received[self.index] += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.upstream.ended.add(self.index)
        self.upstream._notify()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._target = b""
        self._headers = []
        self._body = bytearray()

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        seen = SeenRequest(
            self.index, method, self._target.decode("latin-1"), self._headers, bytes(self._body)
        )
        self.upstream.requests.append(seen)
        self.upstream._notify()
        self.pending.put_nowait(None)

    # -- the script --------------------------------------------------------------------------

    async def _answer(self) -> None:
        assert self.script is not None and self.transport is not None
        while not self.closed:
            await self.pending.get()
            reply = self.script.popleft() if self.script else (self.upstream.repeat or HANG_UP)
            if reply.hold is not None:
                await reply.hold.wait()
            if self.closed:
                return
            if reply.data:
                self.transport.write(reply.data)
            if reply.close:
                self.closed = True
                with contextlib.suppress(OSError):
                    self.transport.close()  # FIN after what was written
                return
