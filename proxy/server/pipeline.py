"""The request pipeline, top to bottom: module -> (CORS preflight) -> route -> authenticate
-> authorize -> rate limit -> dispatch.

Every step either returns what the next one needs or raises a GatewayError, which becomes the
error shape in exactly one place (`handle`). Headers every response must carry (X-Request-ID,
CORS) are collected in one dict as the steps learn them and applied to whatever answers,
success or error. Nothing here touches a database or a file: route tables and keys are in
memory, refreshed by the stores.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from aiohttp import web

from proxy.auth.authenticator import Authenticator, authorize
from proxy.auth.client_address import ClientAddressResolver
from proxy.auth.cors import VARY, CorsPolicy, is_preflight
from proxy.auth.principal import Principal
from proxy.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    HandlerNotImplemented,
    InternalError,
    ModuleNotFound,
    PayloadTooLarge,
    RateLimited,
    RouteNotFound,
    ServiceUnavailable,
)
from proxy.executor.client import ExecutorClient, visible_headers
from proxy.observability.observer import RequestInfo, RequestObserver
from proxy.ratelimit.limiter import RateLimiter, is_quota
from proxy.routing.matcher import Match
from proxy.routing.normalize import (
    has_encoded_slash,
    hides_dot_segment,
    normalize_path,
    origin_form,
)
from proxy.routing.registry import RouteRegistry
from proxy.routing.table import CompiledRoute, ModuleTable
from proxy.server.request_id import request_id_for
from proxy.server.responses import error_response
from proxy.upstream.forward import forward, invite_body
from proxy.upstream.headers import check_framing, request_header_lines
from proxy.upstream.pool import UpstreamPool

log = logging.getLogger("modgate.request")

MODULE_PREFIX = "/api/modules/"


class Pipeline:
    """Serves the public port. `sidecar_module` set: that one module answers every path."""

    __slots__ = (
        "addresses", "auth", "cors", "executor", "limiter", "max_body_bytes", "observer",
        "pool", "registry", "sidecar_module",
    )  # fmt: skip

    def __init__(
        self,
        registry: RouteRegistry,
        pool: UpstreamPool,
        auth: Authenticator,
        *,
        cors: CorsPolicy,
        addresses: ClientAddressResolver,
        limiter: RateLimiter | None = None,
        observer: RequestObserver | None = None,
        executor: ExecutorClient | None = None,
        max_body_bytes: int,
        sidecar_module: str | None = None,
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.auth = auth
        self.cors = cors
        self.addresses = addresses
        self.limiter = limiter
        self.observer = observer
        self.executor = executor
        self.max_body_bytes = max_body_bytes
        self.sidecar_module = sidecar_module

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request_id_for(request.headers.get("X-Request-ID"))
        extra = {"X-Request-ID": request_id}
        if self.cors.enabled:
            self._cors_headers(request, extra)
        info = RequestInfo()
        error: str | None = None
        try:
            response = await self._serve(request, extra, info)
        except GatewayError as err:
            error = err.message
            response = error_response(err, request_id, extra)
            if err.closes_connection:
                response.force_close()
        except Exception:
            log.exception("unhandled error serving %s (request %s)", request.method, request_id)
            error = InternalError.default_message
            response = error_response(InternalError(), request_id, extra)
        if self.observer is not None:
            self.observer.observe(request, response, info, started, request_id, error)
        return response

    async def _serve(
        self, request: web.BaseRequest, extra: dict[str, str], info: RequestInfo
    ) -> web.StreamResponse:
        headers = request.headers
        check_framing(headers)
        target = request.raw_path
        if "#" in target:
            # Never part of a request target (RFC 9112 section 3.2); upstreams cut the path at
            # it, so the path they resolve would not be the one matched.
            raise BadRequest("A request target cannot contain '#'")
        if target[:1] != "/":
            target = origin_form(target, headers.get("Host"))
        path, _, query = target.partition("?")
        table, raw_module_path = self._module_for(path)
        # Matched and forwarded alike: what the upstream resolves is what was authorised.
        module_path = normalize_path(raw_module_path)
        info.table, info.module_path, info.query = table, module_path, query

        origin = headers.get("Origin")
        requested = headers.get("Access-Control-Request-Method")
        if self.cors.enabled and is_preflight(request.method, origin, requested):
            if not self.cors.allows(origin):
                raise Forbidden("Origin not allowed")
            return self._preflight(table, module_path, requested or "", extra, info)

        match = table.match(module_path, request.method)
        info.route = match.payload
        spec = match.payload.spec
        if has_encoded_slash(module_path):
            if spec.encoded_slashes != "keep":
                raise BadRequest("Encoded slashes (%2F, %5C) are not accepted in this path")
            if hides_dot_segment(module_path):
                raise BadRequest("Encoded slashes cannot hide dot segments")
        info.client_ip = client_ip = self.addresses.resolve(
            request.remote, headers.get("X-Forwarded-For")
        )
        info.principal = principal = await self.auth.authenticate(headers, spec, query)
        authorize(principal, spec, table.id, client_ip, origin)
        if self.limiter is not None:
            decision = await self.limiter.check(principal, spec, table.id, client_ip)
            if decision is not None:
                limit_headers = decision.headers()
                extra.update(limit_headers)
                if not decision.allowed:
                    raise RateLimited(limit_headers, quota=is_quota(decision))
        return await self._dispatch(request, table, match, module_path, query, principal, extra)

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

    def _cors_headers(self, request: web.BaseRequest, extra: dict[str, str]) -> None:
        """What every response carries while CORS is on, errors included: Vary: Origin, and
        for an allowed origin the gateway's Access-Control-* (proxy/auth/cors.py)."""
        extra["Vary"] = VARY
        headers = request.headers
        origin = headers.get("Origin")
        if origin is not None and self.cors.allows(origin):
            preflight = is_preflight(
                request.method, origin, headers.get("Access-Control-Request-Method")
            )
            extra.update(self.cors.response_headers(origin, preflight=preflight))

    def _preflight(
        self,
        table: ModuleTable,
        module_path: str,
        requested: str,
        extra: dict[str, str],
        info: RequestInfo,
    ) -> web.Response:
        """An allowed origin's preflight: the methods the path accepts (404 when none). It is
        counted under the route the requested method would reach (the path's first route when
        that method has none: the browser then refuses the call itself)."""
        methods = table.matcher.allowed_methods(module_path)
        if not methods:
            raise RouteNotFound()
        info.route = table.match(
            module_path, requested if requested in methods else methods[0]
        ).payload
        if "OPTIONS" not in methods:
            methods = (*methods, "OPTIONS")
        extra.update(self.cors.preflight_headers(methods))
        return web.Response(status=204, headers=extra)

    async def _dispatch(
        self,
        request: web.BaseRequest,
        table: ModuleTable,
        match: Match[CompiledRoute],
        module_path: str,
        query: str,
        principal: Principal,
        extra: dict[str, str],
    ) -> web.StreamResponse:
        route = match.payload
        static = route.static
        if static is not None:
            extra["Content-Type"] = static.content_type
            return web.Response(body=static.body, headers=extra)
        target = route.target
        if target is None:
            return await self._call_handler(request, table, match, query, principal, extra)
        path = target.path_for(module_path, query, match.params)
        endpoint = self.pool.endpoint(target.origin)
        headers = request.headers
        keep_out = _NOTHING
        credential = principal.credential_header
        if credential and not route.spec.forward_credentials:
            keep_out = _CREDENTIAL_NAMES[credential]
        if endpoint.authorization is not None:
            keep_out = keep_out | _AUTHORIZATION  # the URL's credentials replace the client's
        peer = request.remote or ""
        trusted = self.addresses.trusts(peer)
        lines = request_header_lines(
            request.raw_headers, "Connection" in headers, keep_out, trusted_peer=trusted
        )
        # The chain so far counts only from a trusted proxy; anyone else starts it afresh.
        forwarded_for = headers.get("X-Forwarded-For") if trusted else None
        lines.append(
            f"X-Forwarded-For: {forwarded_for}, {peer}\r\n".encode()
            if forwarded_for
            else f"X-Forwarded-For: {peer}\r\n".encode()
        )
        lines.append(_PROTO_LINES[request.scheme])
        if request.host:
            # As sent (llhttp refused CR/LF/NUL); its bytes need not be UTF-8.
            host = request.host.encode("utf-8", "surrogateescape")
            lines.append(b"X-Forwarded-Host: " + host + b"\r\n")
        lines += _identity_lines(extra["X-Request-ID"], table.id, principal)
        return await forward(
            request,
            self.pool,
            endpoint,
            path,
            lines,
            max_body_bytes=self.max_body_bytes,
            extra=extra,
            own_cors=self.cors.enabled,
        )

    async def _call_handler(
        self,
        request: web.BaseRequest,
        table: ModuleTable,
        match: Match[CompiledRoute],
        query: str,
        principal: Principal,
        extra: dict[str, str],
    ) -> web.StreamResponse:
        """A function route: its handler runs in the pool, with the caller's context."""
        if self.executor is None:
            raise HandlerNotImplemented(
                "Function handlers run in the handler pool, which this gateway is not given "
                "(executor_url)"
            )
        route = match.payload
        payload = {
            "module_id": table.id,
            "site_id": principal.site_id,
            "user_id": principal.user_id,
            "api_key_id": principal.api_key_id,
            "scopes": list(principal.grants.scopes),
            "route_id": route.spec.id,
            "handler_key": route.handler_key,
            "code": route.spec.handler_code,
            "params": match.params,
            "query": dict(parse_qsl(query)),
            "body": await self._json_body(request),
            "headers": visible_headers(request.headers),
        }
        return await self.executor.call(payload, extra)

    async def _json_body(self, request: web.BaseRequest) -> Any:
        """The request body as JSON (None when empty): 413 past the limit, 400 if malformed."""
        if not request.body_exists:
            return None
        limit = self.max_body_bytes or _HANDLER_BODY_LIMIT
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        await invite_body(request)
        raw = await request.content.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("Malformed JSON body") from None


# A handler's body is held in memory (it is handed over as JSON): bounded even when
# max_body_bytes is 0 (unlimited for streamed proxy bodies).
_HANDLER_BODY_LIMIT = 10 * 1024 * 1024


_NOTHING: frozenset[bytes] = frozenset()
_AUTHORIZATION = frozenset({b"authorization"})
_CREDENTIAL_NAMES = {"X-API-Key": frozenset({b"x-api-key"}), "Authorization": _AUTHORIZATION}
_PROTO_LINES = {
    "http": b"X-Forwarded-Proto: http\r\n",
    "https": b"X-Forwarded-Proto: https\r\n",
}


def _identity_lines(request_id: str, module_id: str, who: Principal) -> list[bytes]:
    """The request id and who is calling, for the module service (the client's own versions
    of these headers were stripped)."""
    lines = [f"X-Request-ID: {request_id}\r\n", f"X-Module-Id: {module_id}\r\n"]
    if who.site_id:
        lines.append(f"X-Site-Id: {who.site_id}\r\n")
    if who.user_id and who.user_id.isprintable():
        lines.append(f"X-User-Id: {who.user_id}\r\n")
    if who.api_key is not None:
        lines.append(f"X-Api-Key-Id: {who.api_key.record.id}\r\n")
    if who.grants.scopes:
        lines.append(f"X-Scopes: {' '.join(who.grants.scopes)}\r\n")
    return [line.encode("utf-8", "surrogateescape") for line in lines]
