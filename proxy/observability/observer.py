"""What happens after every request: metrics, the access log line, the request log row.

Strategy: the pipeline fills a `RequestInfo` as it learns things (module, route, caller) and
calls `observe` once with the response. Metric label children are cached per label tuple, so
a request costs two dict lookups, not two `.labels()` calls. Label values stay bounded: the
module's alias or id ("unknown" before one is found), the route template ("unmatched" when no
route matched) and the method (OTHER for anything outside HTTP's usual set).
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
    from proxy.auth.client_address import IPAddress
    from proxy.auth.principal import Principal
    from proxy.observability.access_log import AccessLog
    from proxy.observability.request_log import RequestLog
    from proxy.routing.table import CompiledRoute, ModuleTable

UNKNOWN_MODULE = "unknown"
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_CACHED_CHILDREN = 50_000


class RequestInfo:
    """Facts about one request, filled in by the pipeline as it goes."""

    __slots__ = ("client_ip", "module_path", "principal", "query", "route", "table")

    def __init__(self) -> None:
        self.table: ModuleTable | None = None
        self.route: CompiledRoute | None = None
        self.principal: Principal | None = None
        self.client_ip: IPAddress | None = None
        self.module_path = ""
        self.query = ""


class RequestObserver:
    __slots__ = ("_children", "access_log", "request_log")

    def __init__(
        self, *, access_log: AccessLog | None = None, request_log: RequestLog | None = None
    ) -> None:
        self.access_log = access_log
        self.request_log = request_log
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}

    def observe(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        info: RequestInfo,
        started: float,
        request_id: str,
        error: str | None,
    ) -> None:
        elapsed = time.perf_counter() - started
        table, route = info.table, info.route
        module = (table.name or table.id) if table is not None else UNKNOWN_MODULE
        template = route.template if route is not None else UNMATCHED_ROUTE
        method = request.method if request.method in _METHODS else "OTHER"
        status = response.status
        key = (module, template, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._bind(key)
        children[0].inc()
        children[1].observe(elapsed)
        if self.access_log is not None:
            self.access_log.write(
                {
                    "ts": time.time(),
                    "request_id": request_id,
                    "module": module,
                    "route": template,
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "caller": _caller(info.principal),
                    "client": str(info.client_ip) if info.client_ip is not None else request.remote,
                }
            )
        if self.request_log is not None and table is not None:
            self.request_log.record(_log_row(request, info, table, status, elapsed, error))

    def _bind(self, key: tuple[str, str, str, int]) -> tuple[Any, Any]:
        module, template, method, status = key
        children = (
            metrics.REQUESTS.labels(module=module, route=template, method=method, status=status),
            metrics.REQUEST_DURATION.labels(module=module, route=template),
        )
        if len(self._children) < _MAX_CACHED_CHILDREN:
            self._children[key] = children
        return children


def _caller(principal: Principal | None) -> str:
    if principal is None:
        return "none"
    if principal.api_key is not None:
        return principal.api_key.record.key_prefix  # the prefix only, never the key
    if principal.user_id:
        return f"user:{principal.user_id}"
    return "anonymous"


def _log_row(
    request: web.BaseRequest,
    info: RequestInfo,
    table: ModuleTable,
    status: int,
    elapsed: float,
    error: str | None,
) -> tuple[Any, ...]:
    """One module_api_logs row, in request_log.COLUMNS order."""
    who = info.principal
    query = orjson.dumps(dict(parse_qsl(info.query))).decode() if info.query else None
    return (
        table.id,
        who.site_id if who is not None else None,
        info.route.spec.id if info.route is not None else None,
        request.method,
        info.module_path,
        query,
        who.auth_type if who is not None else "none",
        who.api_key_id if who is not None else None,
        who.user_id if who is not None else None,
        status,
        int(elapsed * 1000),
        error,
        str(info.client_ip) if info.client_ip is not None else request.remote,
        request.headers.get("User-Agent"),
        datetime.now(UTC),
    )
