"""What happens after every request: metrics, the access log line, the request log row.

Strategy: the pipeline fills the request's `RequestContext` as it learns things (module,
route, caller) and calls `observe` once with the response. Metric label children are cached
per label tuple, so a request costs two dict lookups, not two `.labels()` calls. Label values
stay bounded: the module's alias or id ("unknown" before one is found), the route template
("unmatched" when no route matched) and the method (OTHER for anything outside HTTP's usual
set).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from proxy.observability import metrics

if TYPE_CHECKING:
    from proxy.auth.principal import Principal
    from proxy.observability.access_log import AccessLog
    from proxy.observability.request_log import RequestLog
    from proxy.request_context import RequestContext
    from proxy.routing.table import ModuleTable

UNKNOWN_MODULE = "unknown"
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUESTS = metrics.BoundLabels(metrics.REQUESTS)  # by module, route, method, status
_REQUEST_DURATION = metrics.BoundLabels(metrics.REQUEST_DURATION)  # by module, route


class RequestObserver:
    __slots__ = ("access_log", "request_log")

    def __init__(
        self, *, access_log: AccessLog | None = None, request_log: RequestLog | None = None
    ) -> None:
        self.access_log = access_log
        self.request_log = request_log

    def observe(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        ctx: RequestContext,
        error: str | None,
    ) -> None:
        """Count `response` to `request` in the metrics and log it; `error`: the message of
        the error it answers, if any."""
        elapsed = time.perf_counter() - ctx.started
        table, route = ctx.table, ctx.route
        module = (table.name or table.id) if table is not None else UNKNOWN_MODULE
        template = route.template if route is not None else UNMATCHED_ROUTE
        method = request.method if request.method in _METHODS else "OTHER"
        status = response.status
        _REQUESTS(module, template, method, status).inc()
        _REQUEST_DURATION(module, template).observe(elapsed)
        if self.access_log is not None:
            self.access_log.write(
                {
                    "ts": time.time(),
                    "request_id": ctx.request_id,
                    "module": module,
                    "route": template,
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "caller": _caller(ctx.principal),
                    "client": str(ctx.client_ip) if ctx.client_ip is not None else request.remote,
                }
            )
        if self.request_log is not None and table is not None:
            self.request_log.record(_log_row(request, ctx, table, status, elapsed, error))


def _caller(principal: Principal | None) -> str:
    if principal is None:
        return "none"
    if principal.api_key is not None:
        return principal.api_key.record.key_prefix  # the prefix only, never the key
    if principal.consumer is not None:
        return principal.consumer.record.key_prefix
    if principal.user_id:
        return f"user:{principal.user_id}"
    return "anonymous"


def _log_row(
    request: web.BaseRequest,
    ctx: RequestContext,
    table: ModuleTable,
    status: int,
    elapsed: float,
    error: str | None,
) -> tuple[Any, ...]:
    """One module_api_logs row, in request_log.COLUMNS order."""
    who = ctx.principal
    query = orjson.dumps(dict(parse_qsl(ctx.query))).decode() if ctx.query else None
    return (
        table.id,
        who.site_id if who is not None else None,
        ctx.route.spec.id if ctx.route is not None else None,
        request.method,
        ctx.module_path,
        query,
        who.auth_type if who is not None else "none",
        who.api_key_id if who is not None else None,
        who.user_id if who is not None else None,
        status,
        int(elapsed * 1000),
        error,
        str(ctx.client_ip) if ctx.client_ip is not None else request.remote,
        request.headers.get("User-Agent"),
        datetime.now(UTC),
        who.consumer_id if who is not None else None,
    )
