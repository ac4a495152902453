"""One dedicated Redis connection for the limiter: commands written as they come, replies read
continuously and matched to their callers in order.

Strategy: Redis answers the commands of one connection in the order it received them, so a
FIFO of futures is all the bookkeeping a pipeline needs. `send` writes a batch of encoded
commands with one `transport.write` and appends their futures; `data_received` feeds hiredis
and resolves futures as replies complete, synchronously, in the callback. No task, pool
checkout or timeout context per batch: one timer per batch enforces the budget. A batch whose
replies are late fails with TimeoutError and takes the connection down with it (its replies
would arrive out of step with later callers'); the next `send` connects again.

Where this connection's parameters come from: the redis-py client's pool (host/port or unix
path, username/password, db, TLS), so a URL means the same thing here as everywhere else;
redis-py stays the client for everything but this hot path.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

Reply = Any


def encode_command(*args: bytes) -> bytes:
    """RESP encoding of one command (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class _PipeProtocol(asyncio.Protocol):
    __slots__ = ("closed", "pending", "reader", "transport")

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.pending: deque[asyncio.Future[Reply]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"invalid reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self.abort(RedisConnectionError("unexpected reply from Redis"))
                return
            future = pending.popleft()
            if future.done():  # its caller gave up (budget spent)
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                error = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
                future.set_exception(error(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(RedisConnectionError("connection to Redis lost"), cause=exc)

    def abort(self, exc: BaseException) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail_all(exc)

    def _fail_all(self, exc: BaseException, cause: BaseException | None = None) -> None:
        self.closed = True
        if cause is not None:
            exc.__cause__ = cause
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(exc)


class RedisPipe:
    """The connection, (re)opened on demand; `__repr__` tells its state."""

    __slots__ = ("_connecting", "_params", "_protocol", "timeout")

    def __init__(self, client: Any, *, timeout: float) -> None:
        pool = client.connection_pool
        self._params: dict[str, Any] = {
            **pool.connection_kwargs,
            "tls": issubclass(pool.connection_class, _ssl_connection_class()),
        }
        self.timeout = timeout
        self._protocol: _PipeProtocol | None = None
        self._connecting: asyncio.Future[_PipeProtocol] | None = None

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.closed

    def send_now(self, commands: bytes, futures: list[asyncio.Future[Reply]]) -> bool:
        """Write `commands` if connected (their replies resolve `futures`); False otherwise."""
        protocol = self._protocol
        if protocol is None or protocol.closed or protocol.transport is None:
            return False
        protocol.pending.extend(futures)
        protocol.transport.write(commands)
        return True

    async def connect(self) -> None:
        """Open the connection (one attempt at a time, shared by every caller waiting)."""
        if self.connected:
            return
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        await asyncio.shield(self._connecting)

    def expire(self, futures: list[asyncio.Future[Reply]]) -> None:
        """The budget of a batch is spent: fail what is unanswered and drop the connection."""
        late = [f for f in futures if not f.done()]
        if not late:
            return
        error = TimeoutError(f"Redis did not answer within {self.timeout * 1000:.0f} ms")
        for future in late:
            future.set_exception(error)
        if self._protocol is not None:
            self._protocol.abort(RedisConnectionError("dropped after late replies"))

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.abort(RedisConnectionError("limiter closed"))
            self._protocol = None

    def _connected(self, task: asyncio.Future[_PipeProtocol]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._protocol = task.result()

    async def _open(self) -> _PipeProtocol:
        params = self._params
        loop = asyncio.get_running_loop()
        protocol = _PipeProtocol()
        async with asyncio.timeout(max(self.timeout * 10, 1.0)):
            if params.get("path"):
                await loop.create_unix_connection(lambda: protocol, params["path"])
            else:
                tls = _tls_context(params) if params["tls"] else None
                await loop.create_connection(
                    lambda: protocol,
                    params.get("host", "localhost"),
                    int(params.get("port", 6379)),
                    ssl=tls,
                    server_hostname=params.get("host") if tls else None,
                )
            handshake = []
            if params.get("password"):
                user = params.get("username")
                auth = (
                    [user.encode(), params["password"].encode()]
                    if user
                    else [params["password"].encode()]
                )
                handshake.append(encode_command(b"AUTH", *auth))
            if params.get("db"):
                handshake.append(encode_command(b"SELECT", str(params["db"]).encode()))
            if handshake:
                futures = [loop.create_future() for _ in handshake]
                protocol.pending.extend(futures)
                assert protocol.transport is not None
                protocol.transport.write(b"".join(handshake))
                try:
                    await asyncio.gather(*futures)
                except BaseException:
                    protocol.abort(RedisConnectionError("Redis handshake failed"))
                    raise
        return protocol

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        pending = len(self._protocol.pending) if self._protocol is not None else 0
        return f"<RedisPipe {state} pending={pending}>"


def _ssl_connection_class() -> type:
    from redis.asyncio.connection import SSLConnection

    return SSLConnection


def _tls_context(params: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=params.get("ssl_ca_certs"))
    if params.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if params.get("ssl_certfile"):
        context.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile"))
    return context
