"""The gateway's side of the handler pool: one POST per function-route call, pooled.

Strategy: calls go over the same strict keep-alive client as proxied requests
(`UpstreamPool` / `UpstreamConnection`: llhttp-parsed responses, and a connection that sends a
byte nobody asked for is closed, never reused), on a pool of their own so the pool's deadline
and connection limit are the handler pool's. The response body is read with a cap
(`executor_max_response_bytes`): past it the connection is dropped and the client gets 502,
so a handler that returns 200 MiB costs the gateway at most the cap, not 200 MiB.

An answer in the error shape becomes a RelayedExecutorError: the client gets the pool's status,
code and message as they came, and the gateway's request log gets the message (a handler's
failure is logged with its reason, not as a bare 500). One answer is not passed on: the pool's
401 (ExecutorTokenRefused) means the gateway's executor_token is not the pool's, which no
client can fix; it becomes a 502 executor_unauthorized and an ERROR line naming the setting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from proxy.errors import (
    ExecutorTokenRefused,
    ExecutorUnauthorized,
    RelayedExecutorError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.observability import metrics
from proxy.upstream.client import create_pool
from proxy.upstream.connection import UpstreamConnection
from proxy.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    from proxy.request_context import RequestContext
    from proxy.settings_views import UpstreamLimits

log = logging.getLogger("modgate.executor")

TOKEN_HEADER = "X-Modgate-Executor-Token"
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
# The pool stops a handler at its own limit and answers 504; this margin covers the trip, so a
# gateway timeout means the pool itself is stuck.
TIMEOUT_MARGIN_SECONDS = 2.0

# Headers a handler never sees: credentials and cookies belong to the gateway's checks.
HIDDEN_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
_JSON = {"Content-Type": "application/json"}
_POOL_REQUESTS = metrics.BoundLabels(metrics.HANDLER_POOL_REQUESTS)  # by result


def create_executor_pool(limits: UpstreamLimits, handler_timeout: float) -> UpstreamPool:
    """Keep-alive connections to the handler pool: the upstream limits, and a deadline of the
    handler's time limit plus the trip (the pool answers 504 itself at its limit)."""
    deadline = handler_timeout + TIMEOUT_MARGIN_SECONDS
    return create_pool(dataclasses.replace(limits, timeout=deadline))


class HandlerResponseTooLarge(Exception):
    """The handler pool's answer passed executor_max_response_bytes."""


class ExecutorClient:
    __slots__ = (
        "_endpoint",
        "_head",
        "_ok",
        "_sends_token",
        "max_response_bytes",
        "pool",
        "timeout",
        "url",
    )

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
        self._sends_token = token is not None
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
        self._ok = _POOL_REQUESTS("ok")

    async def call(self, payload: dict[str, Any], ctx: RequestContext) -> web.Response:
        body = orjson.dumps(payload)
        request_id = ctx.request_id
        head = self._head + (
            f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n\r\n".encode()
        )
        try:
            async with asyncio.timeout(self.timeout):
                status, answer = await self._exchange(head, body)
        except HandlerResponseTooLarge:
            _POOL_REQUESTS("too_large").inc()
            log.warning(
                "handler pool answer over executor_max_response_bytes (%d) (request %s)",
                self.max_response_bytes,
                request_id,
            )
            raise UpstreamUnavailable("Handler response too large") from None
        except TimeoutError:
            _POOL_REQUESTS("timeout").inc()
            raise UpstreamTimeout("The handler pool did not answer in time") from None
        except OSError as exc:
            _POOL_REQUESTS("unavailable").inc()
            log.warning("handler pool unavailable: %s (request %s)", exc, request_id)
            raise UpstreamUnavailable("The handler pool is unavailable") from None
        if status == ExecutorTokenRefused.status:
            raise self._refused(request_id)
        self._ok.inc()
        if status >= 400 and (error := _relayed_error(status, answer)) is not None:
            raise error
        return web.Response(status=status, body=answer, headers={**ctx.response_headers, **_JSON})

    def _refused(self, request_id: str) -> ExecutorUnauthorized:
        _POOL_REQUESTS("unauthorized").inc()
        sent = "a different one" if self._sends_token else "none (executor_token is unset here)"
        log.error(
            "the handler pool at %s refused this gateway's executor_token (sent: %s): set the "
            "same executor_token (MODGATE_EXECUTOR_TOKEN) on the gateways and the executor "
            "(request %s)",
            self.url,
            sent,
            request_id,
        )
        return ExecutorUnauthorized()

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


def _relayed_error(status: int, answer: bytes) -> RelayedExecutorError | None:
    """The pool's error answer as an error to raise; None when it is not in the error shape
    (then it is passed on as it came)."""
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    message, code = body.get("error"), body.get("code")
    if not isinstance(message, str) or not isinstance(code, str):
        return None
    details = body.get("details")  # validation_failed's messages naming the fields
    if not (isinstance(details, list) and all(isinstance(d, str) for d in details)):
        details = None
    return RelayedExecutorError(status, code, message, details)


def visible_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() not in HIDDEN_HEADERS}
