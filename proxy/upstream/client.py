"""The gateway's HTTP clients: the upstream pool for proxied requests, one for the handler
pool, and one aiohttp session for the rest (JWKS)."""

from __future__ import annotations

import aiohttp

from proxy.settings import Settings
from proxy.upstream.pool import UpstreamPool


def create_pool(settings: Settings) -> UpstreamPool:
    """Keep-alive connections to module upstreams, for the proxy path."""
    return UpstreamPool(
        max_connections=settings.upstream_max_connections,
        keepalive_seconds=settings.upstream_keepalive_seconds,
        connect_timeout=settings.upstream_connect_timeout,
        pool_wait=settings.upstream_pool_wait_seconds,
        timeout=settings.upstream_timeout,
    )


def create_executor_pool(settings: Settings) -> UpstreamPool:
    """Keep-alive connections to the handler pool: its own limits, and a deadline of the
    handler's time limit plus the trip (the pool answers 504 itself at its limit)."""
    from proxy.executor.client import TIMEOUT_MARGIN_SECONDS

    return UpstreamPool(
        max_connections=settings.upstream_max_connections,
        keepalive_seconds=settings.upstream_keepalive_seconds,
        connect_timeout=settings.upstream_connect_timeout,
        pool_wait=settings.upstream_pool_wait_seconds,
        timeout=settings.executor_timeout_seconds + TIMEOUT_MARGIN_SECONDS,
    )


def create_session(settings: Settings) -> aiohttp.ClientSession:
    """The session for the gateway's own calls (the JWKS URL); proxied
    requests go through `create_pool`'s connections instead.

    - No cookie jar: nothing a response sets is ever replayed on a later call.
    - No automatic decompression or default headers: what is sent and received is what the
      caller gave and the server sent.
    """
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections,
        limit_per_host=0,
        keepalive_timeout=settings.upstream_keepalive_seconds,
        ttl_dns_cache=60,
    )
    timeout = aiohttp.ClientTimeout(
        total=settings.upstream_timeout,
        connect=settings.upstream_connect_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        trust_env=False,
        raise_for_status=False,
    )
