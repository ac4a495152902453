"""The request pipeline, top to bottom: module -> (CORS preflight) -> route -> authenticate
-> authorize -> rate limit -> dispatch.

Every step takes the request and its `RequestContext`, records there what it learned, and
either returns what the next one needs or raises a GatewayError, which becomes the error shape
in exactly one place (`handle`). Headers every response must carry (X-Request-ID, CORS,
rate-limit headers) are collected in `ctx.response_headers` as the steps learn them and
applied to whatever answers, success or error. Nothing here touches a database or a file:
route tables and keys are in memory, refreshed by the stores. What an upstream is sent is the
Forwarder's business (proxy/upstream/forwarder.py): the pipeline says who is calling and where
to.
"""

from __future__ import annotations

import functools
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
from proxy.auth.signatures import has_signature
from proxy.errors import (
    BadRequest,
    DatabaseRequired,
    Forbidden,
    GatewayError,
    HandlerNotImplemented,
    InternalError,
    ModuleNotFound,
    PayloadTooLarge,
    RateLimited,
    RouteNotFound,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from proxy.executor.client import ExecutorClient, visible_headers
from proxy.http.request_id import request_id_for
from proxy.http.responses import error_response
from proxy.observability.observer import RequestObserver
from proxy.ratelimit.limiter import RateLimiter, is_quota
from proxy.request_context import RequestContext
from proxy.routing.matcher import Match
from proxy.routing.normalize import (
    has_encoded_slash,
    hides_dot_segment,
    normalize_path,
    origin_form,
)
from proxy.routing.registry import RouteRegistry
from proxy.routing.table import CompiledRoute, ModuleTable
from proxy.upstream.forward import invite_body
from proxy.upstream.forwarder import Forwarder
from proxy.upstream.headers import check_framing

log = logging.getLogger("modgate.request")

MODULE_PREFIX = "/api/modules/"
# A handler's body is held in memory (it is handed over as JSON): bounded even when
# max_body_bytes is 0 (unlimited for streamed proxy bodies).
_HANDLER_BODY_LIMIT = 10 * 1024 * 1024


class Pipeline:
    """Serves the public port. `sidecar_module` set: that one module answers every path."""

    __slots__ = (
        "addresses", "auth", "cors", "executor", "forwarder", "handler_body_limit", "limiter",
        "observer", "registry", "sidecar_module",
    )  # fmt: skip

    def __init__(
        self,
        registry: RouteRegistry,
        auth: Authenticator,
        forwarder: Forwarder,
        *,
        cors: CorsPolicy,
        addresses: ClientAddressResolver,
        limiter: RateLimiter | None = None,
        observer: RequestObserver | None = None,
        executor: ExecutorClient | None = None,
        sidecar_module: str | None = None,
    ) -> None:
        self.registry = registry
        self.auth = auth
        self.forwarder = forwarder
        self.cors = cors
        self.addresses = addresses
        self.limiter = limiter
        self.observer = observer
        self.executor = executor
        self.sidecar_module = sidecar_module
        self.handler_body_limit = forwarder.max_body_bytes or _HANDLER_BODY_LIMIT

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        ctx = RequestContext(request_id_for(request.headers.get("X-Request-ID")), started)
        if self.cors.enabled:
            self._cors_headers(request, ctx)
        error: str | None = None
        try:
            response = await self._serve(request, ctx)
        except GatewayError as err:
            error = err.message
            response = error_response(err, ctx.request_id, ctx.response_headers)
            if err.closes_connection:
                response.force_close()
        except Exception:
            log.exception("unhandled error serving %s (request %s)", request.method, ctx.request_id)
            error = InternalError.default_message
            response = error_response(InternalError(), ctx.request_id, ctx.response_headers)
        if self.observer is not None:
            self.observer.observe(request, response, ctx, error)
        return response

    def _cors_headers(self, request: web.BaseRequest, ctx: RequestContext) -> None:
        """What every response carries while CORS is on, errors included: Vary: Origin, and
        for an allowed origin the gateway's Access-Control-* (proxy/auth/cors.py)."""
        ctx.response_headers["Vary"] = VARY
        headers = request.headers
        origin = headers.get("Origin")
        if origin is not None and self.cors.allows(origin):
            preflight = is_preflight(
                request.method, origin, headers.get("Access-Control-Request-Method")
            )
            ctx.response_headers.update(self.cors.response_headers(origin, preflight=preflight))

    async def _serve(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        headers = request.headers
        check_framing(headers)
        table = self._locate(request, ctx)
        origin = headers.get("Origin")
        if self.cors.enabled:
            requested = headers.get("Access-Control-Request-Method")
            if is_preflight(request.method, origin, requested):
                if not self.cors.allows(origin):
                    raise Forbidden("Origin not allowed")
                return self._preflight(ctx, table, requested or "")
        match = self._match(request, ctx, table)
        spec = match.payload.spec
        ctx.client_ip = client_ip = self.addresses.resolve(
            request.remote, headers.get("X-Forwarded-For")
        )
        ctx.principal = principal = await self.auth.authenticate(headers, spec, ctx.query)
        consumer = principal.consumer
        if consumer is not None and (consumer.require_signature or has_signature(headers)):
            ctx.body = await self.auth.signatures.verify(
                request,
                consumer,
                scheme=self._client_scheme(request),
                read_body=functools.partial(self._read_body, request),
            )
        authorize(principal, spec, table.id, client_ip, origin)
        if self.limiter is not None:
            decision = await self.limiter.check(principal, spec, table.id, client_ip)
            if decision is not None:
                limit_headers = decision.headers()
                ctx.response_headers.update(limit_headers)
                if not decision.allowed:
                    raise RateLimited(limit_headers, quota=is_quota(decision))
        return await self._dispatch(request, ctx, match, table, principal)

    def _client_scheme(self, request: web.BaseRequest) -> str:
        """The scheme the client used: a trusted proxy's X-Forwarded-Proto (TLS ends there),
        else the gateway's own."""
        forwarded = request.headers.get("X-Forwarded-Proto")
        if forwarded and self.addresses.trusts(request.remote):
            return forwarded.split(",")[0].strip().lower()
        return request.scheme

    def _locate(self, request: web.BaseRequest, ctx: RequestContext) -> ModuleTable:
        """The module's table; it, the normalised path within the module and the query go in
        `ctx`."""
        target = request.raw_path
        if "#" in target:
            # Never part of a request target (RFC 9112 section 3.2); upstreams cut the path at
            # it, so the path they resolve would not be the one matched.
            raise BadRequest("A request target cannot contain '#'")
        if target[:1] != "/":
            target = origin_form(target, request.headers.get("Host"))
        path, _, query = target.partition("?")
        table, raw_module_path = self._module_for(path)
        # Matched and forwarded alike: what the upstream resolves is what was authorised.
        ctx.table, ctx.module_path, ctx.query = table, normalize_path(raw_module_path), query
        return table

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

    def _match(
        self, request: web.BaseRequest, ctx: RequestContext, table: ModuleTable
    ) -> Match[CompiledRoute]:
        """The route for the method and path (404 / 405 when none); it goes in `ctx`."""
        module_path = ctx.module_path
        match = table.match(module_path, request.method)
        ctx.route = match.payload
        if has_encoded_slash(module_path):
            if match.payload.spec.encoded_slashes != "keep":
                raise BadRequest("Encoded slashes (%2F, %5C) are not accepted in this path")
            if hides_dot_segment(module_path):
                raise BadRequest("Encoded slashes cannot hide dot segments")
        return match

    def _preflight(self, ctx: RequestContext, table: ModuleTable, requested: str) -> web.Response:
        """An allowed origin's preflight: the methods the path accepts (404 when none). It is
        counted under the route the requested method would reach (the path's first route when
        that method has none: the browser then refuses the call itself)."""
        module_path = ctx.module_path
        methods = table.matcher.allowed_methods(module_path)
        if not methods:
            raise RouteNotFound()
        ctx.route = table.match(
            module_path, requested if requested in methods else methods[0]
        ).payload
        if "OPTIONS" not in methods:
            methods = (*methods, "OPTIONS")
        ctx.response_headers.update(self.cors.preflight_headers(methods))
        return web.Response(status=204, headers=ctx.response_headers)

    async def _dispatch(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        match: Match[CompiledRoute],
        table: ModuleTable,
        caller: Principal,
    ) -> web.StreamResponse:
        """The answer: a static route's body, the handler pool's (function and entity routes),
        or the upstream's; `caller` is in `table`'s module, authorised and within its limits."""
        route = match.payload
        static = route.static
        if static is not None:
            ctx.response_headers["Content-Type"] = static.content_type
            return web.Response(body=static.body, headers=ctx.response_headers)
        target = route.target
        if target is None:
            return await self._call_pool(request, ctx, match, table, caller)
        path = target.path_for(ctx.module_path, ctx.query, match.params)
        return await self.forwarder.forward(
            request,
            ctx,
            target,
            path,
            caller=caller,
            module_id=table.id,
            forward_credentials=route.spec.forward_credentials,
        )

    async def _call_pool(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        match: Match[CompiledRoute],
        table: ModuleTable,
        caller: Principal,
    ) -> web.StreamResponse:
        """A function route (its handler) or an entity route (its operation on the module's
        table): the pool runs it with the caller's context. The route's `pool_call` holds the
        payload's fields that are the same on every call; the kind-specific parts follow."""
        route = match.payload
        entity = route.entity
        if self.executor is None:
            if entity is not None:
                raise DatabaseRequired()
            raise HandlerNotImplemented(
                "Function handlers run in the handler pool, which this gateway is not given "
                "(executor_url)"
            )
        if entity is not None and caller.site_id is None:
            # Every entity statement is bound to the caller's site; without one there is no
            # row it may touch (a function route's ctx.db refuses such a caller too).
            raise Forbidden("This endpoint needs credentials bound to a site")
        payload: dict[str, Any] = {
            "module_id": table.id,
            "site_id": caller.site_id,
            "user_id": caller.user_id,
            "api_key_id": caller.api_key_id,
            "consumer_id": caller.consumer_id,  # an API consumer's id, else None
            "scopes": list(caller.grants.scopes),
            **route.pool_call,
            "params": match.params,
        }
        if entity is None:
            payload["query"] = dict(parse_qsl(ctx.query))
            payload["body"] = await self._json_body(request, ctx)
            payload["headers"] = visible_headers(request.headers)
        else:
            # In order, repeats and blanks kept: the pool's query grammar refuses what it does
            # not know, so nothing may be dropped here.
            payload["query"] = parse_qsl(ctx.query, keep_blank_values=True)
            payload["body"] = (
                await self._json_body(request, ctx, json_only=True) if route.reads_body else None
            )
            payload["method"] = request.method
        return await self.executor.call(payload, ctx)

    async def _json_body(
        self, request: web.BaseRequest, ctx: RequestContext, *, json_only: bool = False
    ) -> Any:
        """The request body as JSON (None when empty): 413 past the limit, 400 if malformed;
        `json_only` (an entity's create or update): 415 unless its Content-Type is JSON."""
        if not request.body_exists:
            return None
        if json_only and not _is_json(request.content_type):
            raise UnsupportedMediaType(
                f"Request body must be application/json, not {request.content_type[:64]}"
            )
        raw = ctx.body if ctx.body is not None else await self._read_body(request)
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("Malformed JSON body") from None

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The whole body, held in memory: at most `handler_body_limit` bytes (413 past it)."""
        limit = self.handler_body_limit
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        await invite_body(request)
        # read(n) answers what is buffered, not n bytes: a body arriving in several reads is
        # gathered to its end (or one byte past the limit).
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await request.content.readany()
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        return b"".join(chunks)


def _is_json(media_type: str) -> bool:
    """application/json or a `+json` type (RFC 6839), parameters aside (aiohttp strips them)."""
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
