"""One exchange with an upstream: send a request, relay its response, streaming both bodies.

Strategy: the request head is built as bytes from the client's raw header lines plus the
gateway's own (no decode/re-encode; which lines, `Forwarder` decides), written on a pooled
keep-alive connection (`UpstreamPool`), and the response is parsed by llhttp
(`UpstreamConnection`). A request body is streamed by a writer task while the response is
awaited, so a 1 GB upload costs a few buffers, not 1 GB, and an upstream that answers early
is heard. Small upstream responses with a known length are read whole and sent in one write;
everything else is relayed chunk by chunk as it arrives, with back-pressure both ways. One
deadline (`upstream_timeout`) covers the whole exchange, connect included.

Failure mapping, before the response has started: connect/total timeout -> 504, refused or
broken connection or an invalid response -> 502, body over the limit -> 413. After the status
line has been sent nothing can be mapped any more: the client's connection is cut so a
truncated body never looks complete. A reused keep-alive connection that the upstream had
already closed is retried once, on a new connection, when the request is idempotent, has no
body and no byte of a response came back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import HttpVersion11, web
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from multidict import CIMultiDict

from proxy.auth.cors import apply_gateway_cors
from proxy.errors import BadRequest, PayloadTooLarge, UpstreamTimeout, UpstreamUnavailable
from proxy.observability import metrics
from proxy.upstream.connection import UpstreamClosed, UpstreamConnection
from proxy.upstream.headers import response_header_pairs
from proxy.upstream.pool import Endpoint, UpstreamPool

log = logging.getLogger("modgate.upstream")

# Responses up to this size (with a Content-Length) are read whole: one write instead of a loop.
SMALL_RESPONSE_BYTES = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
# Safe to send again when a reused connection turns out dead (RFC 9110 §9.2.2).
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods whose empty body is still announced (Content-Length: 0), as HTTP clients do.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UPSTREAM_DURATION = metrics.BoundLabels(metrics.UPSTREAM_DURATION)  # by upstream origin
_UPSTREAM_ERRORS = metrics.BoundLabels(metrics.UPSTREAM_ERRORS)  # by kind


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


async def _buffered(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _request_body(
    request: web.BaseRequest, state: _BodyState, buffered: bytes | None
) -> StreamReader | AsyncIterator[bytes] | None:
    if not request.body_exists:
        return None
    if buffered is not None:
        # Read whole already (a signed request's digest), within the handler body limit: the
        # stream is spent, these are its bytes. The framing stays the client's (the parser
        # delivered exactly Content-Length bytes; chunked is re-encoded as one chunk).
        return _buffered(buffered)
    length = request.content_length
    if length is not None:
        # The HTTP parser never delivers more than Content-Length, so the header is the limit.
        if state.limit and length > state.limit:
            raise PayloadTooLarge(f"Request body exceeds {state.limit} bytes")
        return request.content
    if not state.limit:
        return request.content
    return _counted(request.content, state)


async def invite_body(request: web.BaseRequest) -> None:
    """Answer `Expect: 100-continue` just before the body is read, so a client waiting for it
    sends the body only once the request has passed auth, limits and the size check (the
    low-level server does not do this itself: it is the Application router's job)."""
    if (
        request.version == HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
        and isinstance(request.writer, StreamWriter)
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started


def request_head(
    method: str,
    target: str,
    endpoint: Endpoint,
    header_lines: list[bytes],
    framing: bytes | None,
) -> bytes:
    """The request line, Host, the forwarded header lines and the body framing, as bytes.

    Raises BadRequest when a value put in by the gateway (a token's claim, say) would break
    the head with a line break: every line must end where the gateway ended it."""
    lines = [
        f"{method} {target} HTTP/1.1\r\n".encode(),
        b"Host: " + endpoint.host_header + b"\r\n",
    ]
    if endpoint.authorization is not None:
        lines.append(endpoint.authorization)
    if framing is not None:
        lines.append(framing)
    lines += header_lines
    lines.append(b"\r\n")
    head = b"".join(lines)
    if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines):
        raise BadRequest("A header value cannot be forwarded: it contains a line break")
    return head


def _framing(request: web.BaseRequest, body: object) -> bytes | None:
    """How the body is delimited upstream, written by the gateway from the message it parsed
    (the client's own Content-Length / Transfer-Encoding lines never cross): the parsed length,
    chunked re-encoding when the client sent chunked, or an explicit 0 for an empty POST."""
    if body is None:
        return b"Content-Length: 0\r\n" if request.method in _BODY_METHODS else None
    length = request.content_length
    if length is None:
        return b"Transfer-Encoding: chunked\r\n"
    return b"Content-Length: %d\r\n" % length


async def _send_body(
    conn: UpstreamConnection, body: StreamReader | AsyncIterator[bytes], chunked: bool
) -> None:
    chunks = body.iter_any() if isinstance(body, StreamReader) else body
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            if chunked:
                conn.write(b"%x\r\n" % len(chunk))
                conn.write(chunk)
                conn.write(b"\r\n")
            else:
                conn.write(chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
    except BaseException as exc:
        # The upstream must see the upload cut, never a short body it could take as whole.
        conn.fail(exc)
        raise


def _expire(conn: UpstreamConnection) -> None:
    conn.fail(TimeoutError("upstream_timeout passed"))


async def exchange(
    request: web.BaseRequest,
    pool: UpstreamPool,
    endpoint: Endpoint,
    target: str,
    header_lines: list[bytes],
    *,
    max_body_bytes: int,
    response_headers: dict[str, str],
    gateway_cors: bool,
    buffered_body: bytes | None = None,
) -> web.StreamResponse:
    """Send `request` to `target` (path and query) on `endpoint` with `header_lines` and
    return the relayed response, with the gateway's `response_headers` applied; with
    `gateway_cors` (CORS on) the upstream's Access-Control-* headers are dropped and its Vary
    merged with the gateway's. `buffered_body`: the request's body when a step already read it
    whole (its stream is spent)."""
    state = _BodyState(max_body_bytes)
    body = _request_body(request, state, buffered_body)
    method = request.method
    head = request_head(method, target, endpoint, header_lines, _framing(request, body))
    origin = endpoint.origin
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + pool.timeout
    if body is not None:
        await invite_body(request)
    conn: UpstreamConnection | None = None
    timer: asyncio.TimerHandle | None = None
    sender: asyncio.Task[None] | None = None
    try:
        attempt = 0
        while True:
            attempt += 1
            conn = pool.reuse(endpoint) if attempt == 1 else None
            try:
                if conn is None:
                    async with asyncio.timeout_at(deadline):
                        conn = await pool.acquire(endpoint, fresh=attempt > 1)
                timer = loop.call_at(deadline, _expire, conn)
                conn.begin(head, head_request=method == "HEAD")
                if body is not None:
                    chunked = request.content_length is None
                    sender = asyncio.create_task(_send_body(conn, body, chunked))
                await conn.wait_head()
            except UpstreamClosed as exc:
                if (
                    attempt == 1
                    and body is None
                    and method in _IDEMPOTENT_METHODS
                    and conn is not None
                    and conn.reused
                    and not conn.received
                ):
                    # A keep-alive connection the upstream had closed: nothing was processed.
                    if timer is not None:
                        timer.cancel()
                    pool.release(endpoint, conn)
                    conn = None
                    continue
                raise _translate(exc, state, origin) from exc
            except Exception as exc:
                raise _translate(exc, state, origin) from exc
            break
        assert conn is not None
        return await _relay(request, conn, response_headers, gateway_cors, state, origin)
    finally:
        if timer is not None:
            timer.cancel()
        if sender is not None:
            if not sender.done():
                sender.cancel()  # the upstream answered before reading the whole body
                if conn is not None:
                    conn.close()
            elif not sender.cancelled():
                sender.exception()  # seen: its failure already ended the exchange
        if conn is not None:
            pool.release(endpoint, conn)
        _UPSTREAM_DURATION(origin).observe(time.perf_counter() - started)


async def _relay(
    request: web.BaseRequest,
    conn: UpstreamConnection,
    gateway_headers: dict[str, str],
    gateway_cors: bool,
    state: _BodyState,
    origin: str,
) -> web.StreamResponse:
    status = conn.status
    reason = conn.reason.decode("latin-1") or None
    headers = _response_headers(conn, gateway_headers, gateway_cors)
    length = conn.content_length
    if (
        length is not None
        and length <= SMALL_RESPONSE_BYTES
        and request.method != "HEAD"
        and status not in _NO_BODY_STATUSES
    ):
        try:
            body = await conn.read_all()
        except Exception as exc:
            raise _translate(exc, state, origin) from exc
        del headers["Content-Length"]
        return web.Response(status=status, reason=reason, body=body, headers=headers)

    response = web.StreamResponse(status=status, reason=reason, headers=headers)
    await response.prepare(request)
    try:
        while chunk := await conn.read_chunk():
            await response.write(chunk)
    except ConnectionResetError:
        _UPSTREAM_ERRORS("client_gone").inc()
        conn.close()
        return response
    except (OSError, TimeoutError) as exc:
        _UPSTREAM_ERRORS("broken_response").inc()
        log.warning(
            "upstream %s failed mid-response (%s); closing client connection",
            origin,
            type(exc).__name__,
        )
        conn.close()
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def _response_headers(
    conn: UpstreamConnection, gateway_headers: dict[str, str], gateway_cors: bool
) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(
        response_header_pairs(conn.headers, conn.has_connection)
    )
    if gateway_cors:
        # The gateway answers CORS for every origin (or none): an upstream's own
        # Access-Control-* (an `Allow-Origin: *`, say) would share what the gateway did not.
        apply_gateway_cors(headers, gateway_headers)
    else:
        headers.update(gateway_headers)
    return headers


def _translate(exc: BaseException, state: _BodyState, origin: str) -> Exception:
    """Map a client-side failure to the error the caller sees; details go to the log only."""
    if state.too_large:
        _UPSTREAM_ERRORS("body_too_large").inc()
        return PayloadTooLarge(f"Request body exceeds {state.limit} bytes")
    if isinstance(exc, PayloadTooLarge | BadRequest):
        return exc
    if isinstance(exc, TimeoutError):
        _UPSTREAM_ERRORS("timeout").inc()
        log.warning("upstream %s timed out (%s)", origin, type(exc).__name__)
        return UpstreamTimeout()
    if isinstance(exc, OSError):
        _UPSTREAM_ERRORS("unavailable").inc()
        log.warning("upstream %s unavailable: %s", origin, exc)
        return UpstreamUnavailable()
    log.exception("unexpected error forwarding to %s", origin)
    return UpstreamUnavailable()
