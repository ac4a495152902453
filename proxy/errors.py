"""One exception tree for modgate; each error knows the HTTP status and machine code it becomes.

    ModgateError
    ├── ConfigError                 bad settings or manifest, refused at start or reload (no status)
    │   ├── ManifestError           a routes manifest that does not parse or validate
    │   └── RouteConflictError      routes that cannot compile (ambiguous or malformed)
    ├── StoreError                  Postgres failing; callers keep their last good state
    └── GatewayError                anything that becomes a response to a client (status + code)
        ├── BadRequest              400 bad_request
        │   ├── BadFraming          400 bad_request, and the connection is closed
        │   ├── ValidationFailed    400 validation_failed, with `details` (messages naming fields)
        │   └── RequestTimeout      408 request_timeout (a client too slow with its head or body)
        ├── Unauthorized            401 unauthorized (missing or invalid credentials)
        ├── Forbidden               403 forbidden (valid credentials, not allowed here)
        ├── ModuleNotFound          404 module_not_found
        ├── RouteNotFound           404 route_not_found
        ├── MethodNotAllowed        405 method_not_allowed (carries Allow)
        ├── PayloadTooLarge         413 payload_too_large
        ├── UriTooLong              414 uri_too_long
        ├── UnsupportedMediaType    415 unsupported_media_type (an entity body that is not JSON)
        ├── RateLimited             429 rate_limited / quota_exceeded (carries the headers)
        ├── HeaderFieldsTooLarge    431 header_fields_too_large
        ├── InternalError           500 internal_error
        ├── HandlerNotImplemented   501 handler_not_implemented
        ├── UnsupportedTransferEncoding 501 unsupported_transfer_encoding
        ├── UpstreamUnavailable     502 upstream_unavailable
        ├── ServiceUnavailable      503 service_unavailable
        │   ├── TooManyConnections  503 too_many_connections (the worker's connection cap)
        │   └── DatabaseRequired    503 database_required (entity routes without a handler pool)
        ├── UpstreamTimeout         504 upstream_timeout
        ├── HttpVersionNotSupported 505 http_version_not_supported (anything but HTTP/1.0, 1.1)
        └── ExecutorError           what the handler pool answers; the gateway passes it on
            ├── ExecutorTokenRefused    401 unauthorized (a caller without executor_token)
            ├── RowNotFound             404 not_found (a handler's single-row query found none)
            ├── HandlerFailed           500 handler_error (the handler threw, or broke)
            ├── HandlerInvalid          500 handler_invalid (its code does not compile)
            ├── HandlerMemoryExceeded   500 handler_memory_exceeded
            ├── PoolBusy                503 executor_busy (the worker's slots and queue are full)
            │   └── ModuleBusy          503 module_busy (the module holds all of its slots)
            ├── HandlerTimeout          504 handler_timeout
            ├── ExecutorUnauthorized    502 executor_unauthorized (the gateway's side: the pool
            │                           refused its executor_token; a misconfiguration)
            └── RelayedExecutorError    the gateway's side: the pool's status, code and message

Strategy: a GatewayError's message is written for clients and is the only text that reaches
them; lower-layer exceptions are translated where they cross into the gateway
(`raise UpstreamUnavailable() from exc`) and their text goes to logs only. The handler pool
answers in the same shape, from the same classes: the gateway turns its answer back into a
RelayedExecutorError, so a handler's failure is logged with its message and the client gets
the pool's status, code and message under the gateway's request id.
"""

from __future__ import annotations

from collections.abc import Iterable


class ModgateError(Exception):
    """Base of every error modgate raises on purpose."""


class ConfigError(ModgateError):
    """A setting, manifest or route definition that modgate refuses."""


class ManifestError(ConfigError):
    """A routes manifest that does not parse or validate; the message names the field."""


class RouteConflictError(ConfigError):
    """Routes that cannot be compiled into one unambiguous table."""


class StoreError(ModgateError):
    """The route/key store (Postgres) failed; callers keep serving their last good state."""


class GatewayError(ModgateError):
    """An error that becomes a JSON error response; `message` is safe to show a client."""

    status: int = 500
    code: str = "internal_error"
    default_message: str = "Internal error"
    # The client's connection cannot be trusted to carry another request (its framing is in
    # doubt): answered with Connection: close.
    closes_connection: bool = False
    # Messages naming what was wrong (ValidationFailed), answered as the shape's `details`.
    details: list[str] | None = None

    def __init__(self, message: str | None = None) -> None:
        self.message = self.default_message if message is None else message
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        """Extra response headers this error carries (e.g. Allow)."""
        return {}


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"
    default_message = "Bad request"


class BadFraming(BadRequest):
    """A message whose framing the gateway refuses to re-frame; the connection is closed."""

    closes_connection = True


class ValidationFailed(BadRequest):
    """Input that breaks an entity's rules (a query parameter, a field's type, a required
    field): every problem found, each naming its parameter or field, in `details`."""

    code = "validation_failed"
    default_message = "Validation failed"

    def __init__(self, details: Iterable[str], message: str | None = None) -> None:
        super().__init__(message)
        self.details = list(details)


class RequestTimeout(BadRequest):
    """A client too slow to send its request head or the next part of its body. A BadRequest
    (the client's fault), so layers that pass client errors through pass this one too."""

    status = 408
    code = "request_timeout"
    default_message = "Request not received in time"
    closes_connection = True


class Unauthorized(GatewayError):
    """Missing or invalid credentials. The message never says whether a key exists."""

    status = 401
    code = "unauthorized"
    default_message = "Missing or invalid credentials"
    reason: str = "invalid"  # for logs and metrics only, never shown to the client

    def __init__(self, message: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="modgate"'}


class Forbidden(GatewayError):
    """Valid credentials that lack a scope, or are not allowed for this module, IP or origin."""

    status = 403
    code = "forbidden"
    default_message = "Forbidden"


class ModuleNotFound(GatewayError):
    status = 404
    code = "module_not_found"
    default_message = "Module not found"


class RouteNotFound(GatewayError):
    status = 404
    code = "route_not_found"
    default_message = "Endpoint not found"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    default_message = "Method not allowed"

    def __init__(self, allowed: Iterable[str], message: str | None = None) -> None:
        self.allowed = tuple(allowed)
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"
    default_message = "Request body too large"


class UriTooLong(GatewayError):
    status = 414
    code = "uri_too_long"
    default_message = "Request URL too long"
    closes_connection = True


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"
    default_message = "Request body must be application/json"


class RateLimited(GatewayError):
    """429: the per-minute bucket is empty (rate_limited) or the daily quota is spent."""

    status = 429
    code = "rate_limited"
    default_message = "Rate limit exceeded"

    def __init__(self, headers: dict[str, str], *, quota: bool = False) -> None:
        self._headers = headers
        if quota:
            self.code = "quota_exceeded"
            super().__init__("Daily quota exceeded")
        else:
            super().__init__()

    def headers(self) -> dict[str, str]:
        return self._headers


class HeaderFieldsTooLarge(GatewayError):
    status = 431
    code = "header_fields_too_large"
    default_message = "Request header fields too large"
    closes_connection = True


class InternalError(GatewayError):
    status = 500
    code = "internal_error"
    default_message = "Internal error"


class HandlerNotImplemented(GatewayError):
    status = 501
    code = "handler_not_implemented"
    default_message = "This route's handler type is not available on this gateway"


class UnsupportedTransferEncoding(GatewayError):
    """A transfer coding other than one `chunked` (RFC 9112 section 6.1: a server that does not
    understand a coding answers 501)."""

    status = 501
    code = "unsupported_transfer_encoding"
    default_message = "Only Transfer-Encoding: chunked is supported"
    closes_connection = True


class UpstreamUnavailable(GatewayError):
    status = 502
    code = "upstream_unavailable"
    default_message = "Upstream unavailable"


class ServiceUnavailable(GatewayError):
    status = 503
    code = "service_unavailable"
    default_message = "Service unavailable"


class TooManyConnections(ServiceUnavailable):
    """The worker already holds `max_client_connections`: a new one is answered and closed."""

    code = "too_many_connections"
    default_message = "Too many connections"
    closes_connection = True


class DatabaseRequired(ServiceUnavailable):
    """An entity route on a gateway with no handler pool (executor_url unset, as in the
    embedded default): its rows live in Postgres, which only the pool reaches."""

    code = "database_required"
    default_message = (
        "This endpoint serves rows from Postgres through the handler pool, which this gateway "
        "is not given (executor_url)"
    )


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"
    default_message = "Upstream timed out"


class HttpVersionNotSupported(GatewayError):
    """Only HTTP/1.0 and HTTP/1.1 are served (HTTP/2 needs its own listener)."""

    status = 505
    code = "http_version_not_supported"
    default_message = "HTTP version not supported"
    closes_connection = True


class ExecutorError(GatewayError):
    """An error the handler pool answers instead of a handler's result."""

    status = 500
    code = "handler_error"
    default_message = "The handler failed"


class ExecutorTokenRefused(ExecutorError):
    """A call without the shared executor_token: only gateways may make the pool run code."""

    status = 401
    code = "unauthorized"
    default_message = "Missing or invalid executor token"


class RowNotFound(ExecutorError):
    """A handler's `.single()` found no row (supabase's PGRST116)."""

    status = 404
    code = "not_found"
    default_message = "Not found"


class HandlerFailed(ExecutorError):
    """The handler threw (its message is shown), or broke (a bad result, a crashed isolate)."""


class HandlerInvalid(ExecutorError):
    code = "handler_invalid"
    default_message = "The handler code does not compile"


class HandlerMemoryExceeded(ExecutorError):
    code = "handler_memory_exceeded"
    default_message = "The handler used too much memory"


class PoolBusy(ExecutorError):
    """A call refused without running: the worker's slots and its queue are full. Never ran,
    so a client may retry it whatever its method."""

    status = 503
    code = "executor_busy"
    default_message = "The handler pool is busy"


class ModuleBusy(PoolBusy):
    """The call's module holds all of its slots in this worker, which itself has room."""

    code = "module_busy"
    default_message = "This module's handlers are all busy"


class HandlerTimeout(ExecutorError):
    status = 504
    code = "handler_timeout"
    default_message = "The handler took too long"


class ExecutorUnauthorized(ExecutorError):
    """The gateway's side of ExecutorTokenRefused: the gateway and the pool disagree on
    executor_token. The client did nothing wrong, so it gets a 502, not the pool's 401."""

    status = 502
    code = "executor_unauthorized"
    default_message = "The handler pool refused this gateway"


class RelayedExecutorError(ExecutorError):
    """The pool's error as the gateway received it: its status, code and message, passed on."""

    def __init__(
        self, status: int, code: str, message: str, details: list[str] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.details = details
        super().__init__(message)
