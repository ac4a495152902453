"""The gateway's side of the handler pool: one POST per function-route call, pooled.

Strategy: calls go over the same strict keep-alive client as proxied requests
(`UpstreamPool` / `UpstreamConnection`: llhttp-parsed responses, and a connection that sends a
byte nobody asked for is closed, never reused), on a pool of their own so the pool's deadline
and connection limit are the handler pool's. The response body is read with a cap
(`executor_max_response_bytes`): past it the connection is dropped and the client gets 502,
so a handler that returns 200 MiB costs the gateway at most the cap, not 200 MiB.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from proxy.errors import UpstreamTimeout, UpstreamUnavailable
from proxy.observability import metrics
from proxy.upstream.connection import UpstreamConnection
from proxy.upstream.pool import UpstreamPool

log = logging.getLogger("modgate.executor")

TOKEN_HEADER = "X-Modgate-Executor-Token"
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
# The pool stops a handler at its own limit and answers 504; this margin covers the trip, so a
# gateway timeout means the pool itself is stuck.
TIMEOUT_MARGIN_SECONDS = 2.0

# Headers a handler never sees: credentials and cookies belong to the gateway's checks.
HIDDEN_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
_JSON = {"Content-Type": "application/json"}


class HandlerResponseTooLarge(Exception):
    """The handler pool's answer passed executor_max_response_bytes."""


class ExecutorClient:
    __slots__ = ("_endpoint", "_head", "_ok", "max_response_bytes", "pool", "timeout", "url")

    def __init__(
        self,
        pool: UpstreamPool,
        url: str,
        *,
        token: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.pool = pool
        self.timeout = pool.timeout
        self.max_response_bytes = max_response_bytes
        self.url = url.rstrip("/") + "/v1/execute"
        scheme, _, rest = self.url.partition("://")
        authority, slash, path = rest.partition("/")
        self._endpoint = pool.endpoint(f"{scheme}://{authority}")
        token_line = f"{TOKEN_HEADER}: {token}\r\n" if token is not None else ""
        # Everything but the length and the request id is the same for every call.
        self._head = (
            f"POST {slash}{path} HTTP/1.1\r\n".encode()
            + b"Host: "
            + self._endpoint.host_header
            + b"\r\n"
            + (self._endpoint.authorization or b"")
            + f"Content-Type: application/json\r\n{token_line}".encode()
        )
        self._ok = metrics.HANDLER_POOL_REQUESTS.labels(result="ok")

    async def call(self, payload: dict[str, Any], extra: dict[str, str]) -> web.Response:
        body = orjson.dumps(payload)
        request_id = extra["X-Request-ID"]
        head = self._head + (
            f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n\r\n".encode()
        )
        try:
            async with asyncio.timeout(self.timeout):
                status, answer = await self._exchange(head, body)
        except HandlerResponseTooLarge:
            metrics.HANDLER_POOL_REQUESTS.labels(result="too_large").inc()
            log.warning(
                "handler pool answer over executor_max_response_bytes (%d) (request %s)",
                self.max_response_bytes,
                request_id,
            )
            raise UpstreamUnavailable("Handler response too large") from None
        except TimeoutError:
            metrics.HANDLER_POOL_REQUESTS.labels(result="timeout").inc()
            raise UpstreamTimeout("The handler pool did not answer in time") from None
        except OSError as exc:
            metrics.HANDLER_POOL_REQUESTS.labels(result="unavailable").inc()
            log.warning("handler pool unavailable: %s (request %s)", exc, request_id)
            raise UpstreamUnavailable("The handler pool is unavailable") from None
        self._ok.inc()
        return web.Response(status=status, body=answer, headers={**extra, **_JSON})

    async def _exchange(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        endpoint = self._endpoint
        conn: UpstreamConnection | None = None
        try:
            conn = self.pool.reuse(endpoint) or await self.pool.acquire(endpoint)
            conn.begin(head, head_request=False)
            conn.write(body)
            await conn.wait_head()
            return conn.status, await self._read_capped(conn)
        except BaseException:
            if conn is not None:
                conn.close()  # whatever state it is in, it is not reused
            raise
        finally:
            if conn is not None:
                self.pool.release(endpoint, conn)

    async def _read_capped(self, conn: UpstreamConnection) -> bytes:
        limit = self.max_response_bytes
        if conn.content_length is not None and conn.content_length > limit:
            raise HandlerResponseTooLarge()
        chunks: list[bytes] = []
        size = 0
        while chunk := await conn.read_chunk():
            size += len(chunk)
            if size > limit:
                raise HandlerResponseTooLarge()
            chunks.append(chunk)
        return b"".join(chunks)


def visible_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() not in HIDDEN_HEADERS}
