"""Keep-alive connections to every upstream of a gateway process, one pool per origin.

Strategy: an origin (`scheme://host:port`, as routes name it) is parsed once into an
`Endpoint` that holds its idle connections, most recently used last (reused first, so the
least used ones age out). `acquire` hands out an idle connection or opens one; `release` keeps
it only when its exchange ended cleanly. At most `max_connections` are in use at once, all
origins together (idle ones do not count, like aiohttp's connector); past that, callers wait
for a free slot up to `pool_wait` (upstream_pool_wait_seconds). A sweep closes connections idle
longer than `keepalive_seconds`.

This replaces aiohttp's ClientSession on the proxy path: per request it did far more Python
work (request/response objects, tracing, cookie and redirect plumbing, one timer per phase)
than a gateway forwarding bytes needs; see bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from urllib.parse import unquote

from proxy.http.urls import DEFAULT_PORTS
from proxy.upstream.connection import UpstreamConnection


class Endpoint:
    """One origin: where to connect, what to send as Host, and its idle connections."""

    __slots__ = ("authorization", "host", "host_header", "idle", "origin", "port", "tls")

    def __init__(self, origin: str) -> None:
        scheme, sep, authority = origin.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in DEFAULT_PORTS or not authority:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self.tls = scheme == "https"
        self.authorization: bytes | None = None
        userinfo, at, hostport = authority.rpartition("@")
        # The name in metrics and logs: never the credentials a URL may carry.
        self.origin = f"{scheme}://{hostport}"
        if at:  # credentials in the URL become Basic auth, as HTTP clients do
            token = base64.b64encode(unquote(userinfo).encode()).decode()
            self.authorization = f"Authorization: Basic {token}\r\n".encode()
        if hostport.startswith("["):
            host, _, rest = hostport[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = hostport.partition(":")
        self.host = host
        self.port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
        if not host.isascii():
            ascii_host = host.encode("idna").decode()
            hostport = hostport.replace(host, ascii_host)
            self.host = host = ascii_host
        # Host: the authority as written, without a default port (what HTTP clients send).
        if port_text and self.port == DEFAULT_PORTS[scheme]:
            hostport = hostport.rpartition(":")[0]
        self.host_header = hostport.encode()
        self.idle: deque[UpstreamConnection] = deque()

    def __repr__(self) -> str:
        return f"<Endpoint {self.origin} idle={len(self.idle)}>"


class UpstreamPool:
    __slots__ = (
        "_endpoints", "_in_use", "_loop", "_open", "_sweeper", "_tls_context", "_waiters",
        "connect_timeout", "keepalive_seconds", "max_connections", "pool_wait", "timeout",
    )  # fmt: skip

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_seconds: float,
        connect_timeout: float,
        pool_wait: float | None = None,
        timeout: float,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_seconds = keepalive_seconds
        self.connect_timeout = connect_timeout
        # How long a caller waits for a slot at the limit (default: the connect timeout).
        self.pool_wait = connect_timeout if pool_wait is None else pool_wait
        self.timeout = timeout
        self._endpoints: dict[str, Endpoint] = {}
        self._in_use = 0
        self._open: set[UpstreamConnection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._tls_context: ssl.SSLContext | None = None

    def endpoint(self, origin: str) -> Endpoint:
        endpoint = self._endpoints.get(origin)
        if endpoint is None:
            endpoint = self._endpoints[origin] = Endpoint(origin)
        return endpoint

    def reuse(self, endpoint: Endpoint) -> UpstreamConnection | None:
        """An idle connection to `endpoint`, or None (then `acquire`): no await, no timer."""
        if self._in_use >= self.max_connections:
            return None
        idle = endpoint.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                self._in_use += 1
                return conn
        return None

    async def acquire(self, endpoint: Endpoint, *, fresh: bool = False) -> UpstreamConnection:
        """A connection to `endpoint` once a slot is free: an idle one, or a new one (always a
        new one when `fresh`). Raises OSError when the upstream refuses, TimeoutError past
        `pool_wait` for a slot or the connect timeout for a new connection."""
        if self._in_use >= self.max_connections:
            await self._wait_for_slot()
        if not fresh:
            conn = self.reuse(endpoint)
            if conn is not None:
                return conn
        self._in_use += 1
        try:
            return await self._connect(endpoint)
        except BaseException:
            self._release_slot()
            raise

    def release(self, endpoint: Endpoint, conn: UpstreamConnection) -> None:
        """Give `conn` back after its exchange: kept when clean, closed otherwise."""
        self._release_slot()
        if conn.reusable:
            conn.idle_since = self._now()
            endpoint.idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn.close()
        for endpoint in self._endpoints.values():
            endpoint.idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("upstream pool closed"))

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def _connect(self, endpoint: Endpoint) -> UpstreamConnection:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._schedule_sweep()
        tls = None
        if endpoint.tls:
            if self._tls_context is None:
                self._tls_context = ssl.create_default_context()
            tls = self._tls_context
        async with asyncio.timeout(min(self.connect_timeout, self.timeout)):
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(loop, self._forget),
                endpoint.host,
                endpoint.port,
                ssl=tls,
                server_hostname=endpoint.host if tls else None,
            )
        self._open.add(conn)
        return conn

    async def _wait_for_slot(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.pool_wait):
            while self._in_use >= self.max_connections:
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self._wake_one()  # woken, but cancelled before it ran: pass it on
                    raise
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def _release_slot(self) -> None:
        self._in_use -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _forget(self, conn: UpstreamConnection) -> None:
        self._open.discard(conn)

    def _now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else 0.0

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        period = max(0.5, min(self.keepalive_seconds / 2, 10.0))
        self._sweeper = self._loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past keepalive_seconds (oldest are at the left)."""
        cutoff = self._now() - self.keepalive_seconds
        for endpoint in self._endpoints.values():
            idle = endpoint.idle
            while idle and (idle[0].closed or idle[0].idle_since < cutoff):
                idle.popleft().close()
        self._schedule_sweep()

    def __repr__(self) -> str:
        return (
            f"<UpstreamPool in_use={self._in_use} open={len(self._open)} "
            f"endpoints={len(self._endpoints)} max={self.max_connections}>"
        )
