"""Forward one request to an upstream and relay its response, streaming both bodies.

Strategy: the request body is handed to the client session as a stream (the server's
StreamReader, or a counting generator when the length is unknown and a limit applies), so a
1 GB upload costs a few buffers, not 1 GB. Small upstream responses with a known length are
read whole and sent in one write; everything else is relayed chunk by chunk as it arrives.

Failure mapping, before the response has started: connect/read/total timeout -> 504, refused
or broken connection -> 502, body over the limit -> 413. After the status line has been sent
nothing can be mapped any more: the client's connection is cut so a truncated body never looks
complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.streams import StreamReader
from multidict import CIMultiDict
from yarl import URL

from proxy.errors import PayloadTooLarge, UpstreamTimeout, UpstreamUnavailable
from proxy.observability import metrics
from proxy.upstream.headers import RESPONSE_DROP, filter_headers

log = logging.getLogger("modgate.upstream")

# Responses up to this size (with a Content-Length) are read whole: one write instead of a loop.
SMALL_RESPONSE_BYTES = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class _BodyState:
    __slots__ = ("limit", "too_large")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.too_large = False


async def _counted(content: StreamReader, state: _BodyState) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in content.iter_any():
        seen += len(chunk)
        if seen > state.limit:
            state.too_large = True
            raise PayloadTooLarge(f"Request body exceeds {state.limit} bytes")
        yield chunk


def _request_body(
    request: web.Request, state: _BodyState
) -> StreamReader | AsyncIterator[bytes] | None:
    if not request.body_exists:
        return None
    length = request.content_length
    if length is not None:
        # The HTTP parser never delivers more than Content-Length, so the header is the limit.
        if state.limit and length > state.limit:
            raise PayloadTooLarge(f"Request body exceeds {state.limit} bytes")
        return request.content
    if not state.limit:
        return request.content
    return _counted(request.content, state)


async def forward(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    headers: CIMultiDict[str],
    *,
    max_body_bytes: int,
    extra: dict[str, str],
    origin: str,
) -> web.StreamResponse:
    """Send `request` to `url` with `headers` and return the relayed response, with the
    gateway's own response headers (`extra`: X-Request-ID, CORS) applied."""
    state = _BodyState(max_body_bytes)
    body = _request_body(request, state)
    started = time.perf_counter()
    try:
        upstream = await session.request(
            request.method,
            URL(url, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        )
    except Exception as exc:
        raise _translate(exc, state, origin) from exc
    try:
        return await _relay(request, upstream, extra, state, origin)
    finally:
        upstream.release()
        _upstream_timer(origin).observe(time.perf_counter() - started)


_TIMERS: dict[str, Any] = {}


def _upstream_timer(origin: str) -> Any:
    timer = _TIMERS.get(origin)
    if timer is None:
        timer = _TIMERS[origin] = metrics.UPSTREAM_DURATION.labels(upstream=origin)
    return timer


async def _relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    extra: dict[str, str],
    state: _BodyState,
    origin: str,
) -> web.StreamResponse:
    headers = _response_headers(upstream, extra)
    length = upstream.content_length
    if (
        length is not None
        and length <= SMALL_RESPONSE_BYTES
        and request.method != "HEAD"
        and upstream.status not in _NO_BODY_STATUSES
    ):
        try:
            body = await upstream.read()
        except Exception as exc:
            raise _translate(exc, state, origin) from exc
        del headers["Content-Length"]
        return web.Response(
            status=upstream.status, reason=upstream.reason, body=body, headers=headers
        )

    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        metrics.UPSTREAM_ERRORS.labels(kind="broken_response").inc()
        log.warning(
            "upstream %s failed mid-response (%s); closing client connection",
            origin,
            type(exc).__name__,
        )
        upstream.close()
        if request.transport is not None:
            request.transport.close()
        return response
    except ConnectionResetError:
        metrics.UPSTREAM_ERRORS.labels(kind="client_gone").inc()
        upstream.close()
        return response
    await response.write_eof()
    return response


def _response_headers(upstream: aiohttp.ClientResponse, extra: dict[str, str]) -> CIMultiDict[str]:
    headers = filter_headers(upstream.headers, RESPONSE_DROP)
    if "Access-Control-Allow-Origin" in extra:
        # The gateway answers CORS; an upstream's own Access-Control-* would contradict it.
        for name in [n for n in headers if n.lower().startswith("access-control-")]:
            del headers[name]
        vary = headers.get("Vary")
        if vary and "origin" not in vary.lower():
            extra = {**extra, "Vary": f"{vary}, Origin"}
    headers.update(extra)
    return headers


def _translate(exc: BaseException, state: _BodyState, origin: str) -> Exception:
    """Map a client-side failure to the error the caller sees; details go to the log only."""
    if state.too_large:
        metrics.UPSTREAM_ERRORS.labels(kind="body_too_large").inc()
        return PayloadTooLarge(f"Request body exceeds {state.limit} bytes")
    if isinstance(exc, PayloadTooLarge):
        return exc
    if isinstance(exc, TimeoutError):
        metrics.UPSTREAM_ERRORS.labels(kind="timeout").inc()
        log.warning("upstream %s timed out (%s)", origin, type(exc).__name__)
        return UpstreamTimeout()
    if isinstance(exc, aiohttp.ClientError | OSError):
        metrics.UPSTREAM_ERRORS.labels(kind="unavailable").inc()
        log.warning("upstream %s unavailable: %s", origin, exc)
        return UpstreamUnavailable()
    log.exception("unexpected error forwarding to %s", origin)
    return UpstreamUnavailable()
