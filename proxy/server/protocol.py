"""The client-facing connection: aiohttp's low-level server with the gateway's rules for what
happens before, around and instead of a request.

Strategy: aiohttp's `RequestHandler` parses (llhttp), queues parsed messages and hands them to
the pipeline one at a time, in order; a head llhttp refuses is queued as an error message
(`_ErrInfo`) that aiohttp answers through `handle_error`. `ClientConnection` keeps all of that
and changes four things:
- `handle_error` answers in the error shape: HTTP/1.1, a fresh X-Request-ID, Connection: close,
  counted in modgate_requests_total (module "unknown", route "unmatched", method "OTHER") and
  logged once at INFO with a fixed text, never the request's bytes, never a traceback.
- whatever else the gateway refuses before the pipeline may see a request becomes one more
  queued error message, answered the same way and in order: a head in an HTTP version other
  than 1.0/1.1 (505), a head not complete within client_header_timeout_seconds (408), a
  connection past max_client_connections (503).
- while a request body is incomplete, a silence longer than client_body_timeout_seconds fails
  the body's reads with RequestTimeout (the pipeline answers 408) and the connection closes
  after that answer. Time the gateway itself is not reading (flow control) does not count.
- an error answer after which the gateway closes the connection itself is followed by a
  lingering close (proxy/server/lingering.py): a client still sending reads the answer and a
  clean end, not a reset. A request body such an answer left unread (a 413 before the body) is
  drained by aiohttp instead (its lingering_time), and closed as before.
Timers are one handle each, re-armed when they fire early (as aiohttp's keep-alive timer is), so
a chunk of body costs a clock read, not a cancelled and a new timer.

Invariants: the pipeline only sees HTTP/1.0 and HTTP/1.1 requests, so no status line written
here says anything else; an error answer never contains the request's bytes.

Known gap: a partial head pipelined behind a request still being served (in the same read as
the end of that request) is bounded by client_keepalive_seconds, not the header timeout: aiohttp
does not say where in a read its parser stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import ERROR, RequestHandler, _ErrInfo

from proxy.errors import (
    BadRequest,
    GatewayError,
    HeaderFieldsTooLarge,
    HttpVersionNotSupported,
    InternalError,
    RequestTimeout,
    TooManyConnections,
    UriTooLong,
)
from proxy.http.request_id import request_id_for
from proxy.http.responses import error_response
from proxy.observability import metrics
from proxy.observability.observer import RequestObserver
from proxy.request_context import RequestContext
from proxy.server.lingering import LingeringClose

if TYPE_CHECKING:
    from proxy.settings import Settings

log = logging.getLogger("modgate.server")

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_KEEPALIVE = 75.0
DEFAULT_MAX_CONNECTIONS = 10_000

# llhttp's limits. They differ on purpose: aiohttp reports a URL and a header field over their
# limit alike (LineTooLong), and the limit it carries says which one it was: 414 or 431.
MAX_URL_BYTES = 8192
MAX_FIELD_BYTES = 8190

_SERVED_VERSIONS = (HttpVersion11, HttpVersion10)
# aiohttp's stand-in request for an error message says HTTP/1.0; the answer is HTTP/1.1.
_ERROR_11 = ERROR._replace(version=HttpVersion11)
# Bound once: a slow client (or many, on purpose) reaches these on every timed-out connection.
_HEADER_TIMEOUTS = metrics.CLIENT_TIMEOUTS.labels(phase="header")
_BODY_TIMEOUTS = metrics.CLIENT_TIMEOUTS.labels(phase="body")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLimits:
    """What a client connection is allowed: the `client_*` and `max_client_connections`
    settings (per worker process)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keepalive: float = DEFAULT_KEEPALIVE
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(
            header_timeout=settings.client_header_timeout_seconds,
            body_timeout=settings.client_body_timeout_seconds,
            keepalive=settings.client_keepalive_seconds,
            max_connections=settings.max_client_connections,
        )


# A head llhttp refused, by a fixed text in aiohttp's message (first match wins): the error the
# client gets. Every message here is fixed text, safe for clients and logs alike.
_REFUSED_HEADS: tuple[tuple[str, type[GatewayError], str], ...] = (
    ("PRI/Upgrade", HttpVersionNotSupported, "HTTP/2 is not served on this port"),
    ("Invalid HTTP version", HttpVersionNotSupported, "HTTP version not supported"),
    ("HTTPS traffic", BadRequest, "TLS sent to a plain HTTP port"),
    ("Missing 'Host'", BadRequest, "Missing Host header"),
    ("Transfer-Encoding can't be present with Content-Length", BadRequest,
     "Content-Length and Transfer-Encoding together"),
    ("Duplicate Content-Length", BadRequest, "Duplicate Content-Length"),
    ("Too many headers", HeaderFieldsTooLarge, "Too many request header fields"),
)  # fmt: skip
_REFUSED_BY_TYPE: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (BadHttpMethod, "Bad request method"),
    (BadStatusLine, "Bad request line"),
    (InvalidURLError, "Bad request target"),
    (InvalidHeader, "Bad request header"),
)


def refusal_for(exc: HttpProcessingError) -> GatewayError:
    """The error a client gets for a head the parser refused."""
    if isinstance(exc, LineTooLong):
        return UriTooLong() if exc.args[1] == MAX_URL_BYTES else HeaderFieldsTooLarge()
    text = exc.message
    for needle, error, message in _REFUSED_HEADS:
        if needle in text:
            return error(message)
    for kind, message in _REFUSED_BY_TYPE:
        if isinstance(exc, kind):
            return BadRequest(message)
    return BadRequest("Malformed request")


def _parser_detail(exc: HttpProcessingError) -> str:
    """llhttp's own reason, for the log: aiohttp writes it as `<reason>:\\n\\n  <bytes>`, and only
    the part before the bytes is kept (llhttp's reasons are fixed strings)."""
    reason, sep, _ = exc.message.partition(":\n")
    return f"{type(exc).__name__}: {reason}" if sep and reason.isprintable() else type(exc).__name__


def _queued(err: GatewayError) -> tuple[_ErrInfo, StreamReader]:
    """`err` as a message of aiohttp's queue: answered by `handle_error`, in its turn."""
    return _ErrInfo(status=err.status, exc=err, message=err.message), EMPTY_PAYLOAD


class ClientConnection(RequestHandler):
    """One client connection on the public port (see the module's Strategy)."""

    __slots__ = (
        "_body", "_body_seen", "_body_timer", "_head_partial", "_head_timer", "_limits",
        "_lingering", "_observer",
    )  # fmt: skip

    def __init__(self, manager: EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._observer = manager.observer
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_partial = False  # some bytes of a head that is not complete yet arrived
        self._body: StreamReader | None = None  # the body being received, until its end
        self._body_seen = 0.0  # when its last bytes arrived
        self._body_timer: asyncio.TimerHandle | None = None
        self._lingering: LingeringClose | None = None  # after a closing error answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._manager
        assert isinstance(server, EdgeServer)
        if server.open_connections > self._limits.max_connections:
            metrics.CLIENT_CONNECTIONS_REFUSED.inc()
            self._refuse(TooManyConnections())
            return
        loop = self._loop
        self._head_timer = loop.call_at(
            loop.time() + self._limits.header_timeout, self._head_timed_out
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None
        if self._lingering is not None:
            self._lingering.end()
        super().connection_lost(exc)

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        if self._lingering is not None:
            self._lingering.end()  # a lingering answer is not a request to wait for
        await super().shutdown(timeout)

    def data_received(self, data: bytes) -> None:
        lingering = self._lingering
        if lingering is not None:
            lingering.discard(data)
            return
        if self._close or self._force_close:
            return
        messages = self._messages
        queued = len(messages)
        super().data_received(data)
        if len(messages) > queued:
            self._heads_arrived(queued)
        elif data:
            body = self._body
            if body is not None:
                self._body_seen = self._loop.time()
                if body.is_eof():
                    self._body = None
                return
            # Bytes of a head not complete yet: the clock starts at the first one.
            self._head_partial = True
            if self._head_timer is None:
                loop = self._loop
                self._head_timer = loop.call_at(
                    loop.time() + self._limits.header_timeout, self._head_timed_out
                )

    def _heads_arrived(self, queued: int) -> None:
        """Messages from index `queued` on were just parsed: their heads are complete, those in
        a version the gateway does not serve become 505s, and the last one's body is watched."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_partial = False
        self._refuse_unserved_versions(queued)
        message, payload = self._messages[-1]
        if isinstance(message, _ErrInfo) or payload.is_eof():
            self._body = None
            return
        self._body = payload
        self._body_seen = self._loop.time()
        if self._body_timer is None:
            self._body_timer = self._loop.call_at(
                self._body_seen + self._limits.body_timeout, self._body_check
            )

    def _refuse_unserved_versions(self, start: int) -> None:
        messages = self._messages
        for index in range(start, len(messages)):
            message = messages[index][0]
            if not isinstance(message, _ErrInfo) and message.version not in _SERVED_VERSIONS:
                messages[index] = _queued(HttpVersionNotSupported())

    def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        # aiohttp parses what followed a declined upgrade (WebSocket, CONNECT) in here, not in
        # data_received; only then is there anything to check afterwards.
        if self._upgraded:
            return self._finish_after_upgrade(request, resp, start_time)
        if _closes_after_error(resp):
            return self._finish_and_linger(request, resp, start_time)
        return super().finish_response(request, resp, start_time)

    async def _finish_and_linger(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Write the answer, then linger until the client is done sending (bounded), close."""
        resp, reset = await super().finish_response(request, resp, start_time)
        transport = self.transport
        if reset or transport is None or self._force_close or not request.content.is_eof():
            return resp, reset
        # Nothing more is parsed; what comes is read (flow control let go) and dropped.
        self._close = True
        self._reading_paused = self._buffer_paused = False
        self._resume_transport_reading()
        self._lingering = LingeringClose(self._loop, transport)
        try:
            await self._lingering.wait()
        finally:
            self._lingering = None
            self.force_close()
        return resp, reset

    async def _finish_after_upgrade(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if _closes_after_error(resp):
            result = await self._finish_and_linger(request, resp, start_time)
        else:
            result = await super().finish_response(request, resp, start_time)
        self._refuse_unserved_versions(0)
        return result

    def _refuse(self, err: GatewayError) -> None:
        """Answer `err` next and close: nothing more is parsed on this connection."""
        self._close = True
        self._messages.append(_queued(err))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._close or self._force_close or self.transport is None:
            return
        loop = self._loop
        if self._request_in_progress or self._messages:
            # A head pipelined behind a response still being served: it waits its turn.
            self._head_timer = loop.call_at(
                loop.time() + self._limits.header_timeout, self._head_timed_out
            )
            return
        if not self._head_partial:
            self.force_close()  # opened and never used: nothing to answer
            return
        _HEADER_TIMEOUTS.inc()
        self._refuse(RequestTimeout("Request head not received in time"))

    def _body_check(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof() or self.transport is None:
            self._body = None
            return
        loop = self._loop
        now = loop.time()
        if self._reading_paused or self._buffer_paused:
            self._body_seen = now  # the gateway is not reading: not the client's silence
        deadline = self._body_seen + self._limits.body_timeout
        if now < deadline:
            self._body_timer = loop.call_at(deadline, self._body_check)
            return
        self._body = None
        _BODY_TIMEOUTS.inc()
        log.info(
            "client %s: request body silent for %gs, closing",
            _peer(self.peername),
            self._limits.body_timeout,
        )
        if not self._request_in_progress:
            self.force_close()  # answered already: this was the unread rest being drained
            return
        # Reads of the body fail from now on, and it counts as ended so that aiohttp does not
        # try to drain it after the answer; nothing more is parsed, the connection closes.
        self._close = True
        body.set_exception(RequestTimeout("Request body not received in time"))
        body.feed_eof()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to an error message (a refused head, a refusal queued here) or to an
        exception that escaped the pipeline; always the error shape, always closing."""
        if request.writer.output_size > 0:
            # As aiohttp: a response has begun, the connection can only be cut.
            raise ConnectionError("response already started; cannot send an error response")
        if isinstance(exc, GatewayError):
            err: GatewayError = exc
        elif isinstance(exc, HttpProcessingError):
            err = refusal_for(exc)
        else:
            err = InternalError()
        # Fresh: nothing of a refused head is trusted, its X-Request-ID included.
        request_id = request_id_for(None)
        server = self._manager
        assert isinstance(server, EdgeServer)
        response = error_response(err, request_id, server.error_headers)
        response.force_close()
        peer = _peer(self.peername)
        if isinstance(exc, GatewayError | HttpProcessingError):
            detail = f" [{_parser_detail(exc)}]" if isinstance(exc, HttpProcessingError) else ""
            log.info(
                "client %s: %s%s -> %d %s (request %s)",
                *(peer, err.message, detail, err.status, err.code, request_id),
            )
        else:  # a bug: its traceback is wanted
            log.error("unhandled error serving %s (request %s)", peer, request_id, exc_info=exc)
        if self._observer is not None:
            ctx = RequestContext(request_id, time.perf_counter())
            self._observer.observe(request, response, ctx, err.message)
        return response


def _closes_after_error(resp: web.StreamResponse) -> bool:
    """An error answer the gateway closes the connection after: forced before it is prepared
    (a client's own Connection: close is only known once it is)."""
    return resp.keep_alive is False and resp.status >= 400


def _peer(peername: object) -> str:
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername) if peername else "unknown"


class EdgeServer(web.Server):
    """aiohttp's low-level server whose connections are `ClientConnection`s; it counts them."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        limits: ClientLimits,
        observer: RequestObserver | None = None,
        error_headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            handler,
            keepalive_timeout=limits.keepalive,
            max_line_size=MAX_URL_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            **kwargs,
        )
        self.limits = limits
        self.observer = observer
        self.error_headers = error_headers or {}
        self.open_connections = 0

    def __call__(self) -> RequestHandler:
        return ClientConnection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open_connections += 1
        metrics.CLIENT_CONNECTIONS.inc()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.open_connections -= 1
        metrics.CLIENT_CONNECTIONS.dec()

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if message is ERROR:
            message = _ERROR_11
        return super()._make_request(message, payload, protocol, writer, task)
