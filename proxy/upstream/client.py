"""The gateway's HTTP clients: the upstream pool for proxied requests (the handler pool's is
proxy/executor/client.py's), and one aiohttp session for the rest (JWKS)."""

from __future__ import annotations

import aiohttp

from proxy.settings_views import UpstreamLimits
from proxy.upstream.pool import UpstreamPool


def create_pool(limits: UpstreamLimits) -> UpstreamPool:
    """Keep-alive connections to module upstreams, for the proxy path."""
    return UpstreamPool(
        max_connections=limits.max_connections,
        keepalive_seconds=limits.keepalive_seconds,
        connect_timeout=limits.connect_timeout,
        pool_wait=limits.pool_wait_seconds,
        timeout=limits.timeout,
    )


def create_session(limits: UpstreamLimits) -> aiohttp.ClientSession:
    """The session for the gateway's own calls (the JWKS URL); proxied
    requests go through `create_pool`'s connections instead.

    - No cookie jar: nothing a response sets is ever replayed on a later call.
    - No automatic decompression or default headers: what is sent and received is what the
      caller gave and the server sent.
    """
    connector = aiohttp.TCPConnector(
        limit=limits.max_connections,
        limit_per_host=0,
        keepalive_timeout=limits.keepalive_seconds,
        ttl_dns_cache=60,
    )
    timeout = aiohttp.ClientTimeout(total=limits.timeout, connect=limits.connect_timeout)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        trust_env=False,
        raise_for_status=False,
    )


class LazySession:
    """`create_session`'s session, opened on first call (the first JWKS fetch) and closed by
    `close`. A gateway without jwks_url never opens one, and one that is built but never
    started leaves no unclosed session behind."""

    __slots__ = ("_limits", "_session")

    def __init__(self, limits: UpstreamLimits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = create_session(self._limits)
        return self._session

    async def close(self) -> None:
        # Kept once closed: a call after stop fails as on any closed session, opens nothing.
        if self._session is not None:
            await self._session.close()

    def __repr__(self) -> str:
        session = self._session
        state = "unopened" if session is None else ("closed" if session.closed else "open")
        return f"<LazySession {state}>"
