"""The request pipeline, top to bottom: module -> route -> (auth, limits) -> dispatch.

Every step either returns what the next one needs or raises a GatewayError, which becomes the
error shape in exactly one place (`handle`). Nothing here touches a database or a file: the
route tables are in memory and swapped whole by the stores.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from proxy.errors import (
    GatewayError,
    HandlerNotImplemented,
    InternalError,
    ModuleNotFound,
    RouteNotFound,
    ServiceUnavailable,
)
from proxy.routing.matcher import Match
from proxy.routing.registry import RouteRegistry
from proxy.routing.table import CompiledRoute, ModuleTable
from proxy.server.request_id import request_id_for
from proxy.server.responses import error_response
from proxy.upstream.forward import forward
from proxy.upstream.headers import REQUEST_DROP, filter_headers

log = logging.getLogger("modgate.request")

MODULE_PREFIX = "/api/modules/"


class Pipeline:
    """Serves the public port. `sidecar_module` set: that one module answers every path."""

    __slots__ = ("max_body_bytes", "registry", "session", "sidecar_module")

    def __init__(
        self,
        registry: RouteRegistry,
        session: aiohttp.ClientSession,
        *,
        max_body_bytes: int,
        sidecar_module: str | None = None,
    ) -> None:
        self.registry = registry
        self.session = session
        self.max_body_bytes = max_body_bytes
        self.sidecar_module = sidecar_module

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = request_id_for(request.headers.get("X-Request-ID"))
        try:
            return await self._serve(request, request_id)
        except GatewayError as err:
            return error_response(err, request_id)
        except Exception:
            log.exception("unhandled error serving %s (request %s)", request.method, request_id)
            return error_response(InternalError(), request_id)

    async def _serve(self, request: web.Request, request_id: str) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        table, module_path = self._module_for(path)
        match = table.match(module_path, request.method)
        # Authentication, authorization and rate limiting slot in here (issues 3 and 4).
        return await self._dispatch(request, table, match, module_path, query, request_id)

    def _module_for(self, path: str) -> tuple[ModuleTable, str]:
        """The module's table and the path after /api/modules/{id} (the whole path in sidecar)."""
        if self.sidecar_module is not None:
            return self._table(self.sidecar_module), path or "/"
        if not path.startswith(MODULE_PREFIX):
            raise RouteNotFound("Not found")
        key, slash, rest = path[len(MODULE_PREFIX) :].partition("/")
        if "%" in key:
            key = unquote(key)
        return self._table(key), slash + rest if slash else "/"

    def _table(self, key: str) -> ModuleTable:
        table = self.registry.lookup(key)
        if table is None:
            table = self.registry.lookup(key.lower())
        if table is not None:
            return table
        if not self.registry.loaded:
            raise ServiceUnavailable("Route tables are not loaded yet")
        raise ModuleNotFound()

    async def _dispatch(
        self,
        request: web.Request,
        table: ModuleTable,
        match: Match[CompiledRoute],
        module_path: str,
        query: str,
        request_id: str,
    ) -> web.StreamResponse:
        route = match.payload
        static = route.static
        if static is not None:
            return web.Response(
                body=static.body,
                headers={"Content-Type": static.content_type, "X-Request-ID": request_id},
            )
        target = route.target
        if target is None:
            raise HandlerNotImplemented(
                "Function handlers run in the handler pool, which this gateway does not have"
            )
        url = target.url_for(module_path, query, match.params)
        headers = filter_headers(request.headers, REQUEST_DROP)
        forwarded_for = request.headers.get("X-Forwarded-For")
        peer = request.remote or ""
        headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
        headers["X-Forwarded-Proto"] = request.scheme
        if request.host:
            headers["X-Forwarded-Host"] = request.host
        headers["X-Request-ID"] = request_id
        headers["X-Module-Id"] = table.id
        return await forward(
            request,
            self.session,
            url,
            headers,
            max_body_bytes=self.max_body_bytes,
            request_id=request_id,
        )
