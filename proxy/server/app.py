"""The two aiohttp applications: the public port (the pipeline) and the admin port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.auth.cors import VARY
from proxy.errors import GatewayError
from proxy.http.metrics_endpoint import metrics_text
from proxy.http.request_id import request_id_for
from proxy.http.responses import error_response
from proxy.http.server_header import hide_server_version
from proxy.server.gateway import Gateway
from proxy.server.pipeline import Pipeline
from proxy.server.protocol import MAX_FIELD_BYTES, MAX_URL_BYTES, ClientLimits, EdgeServer
from proxy.upstream.forwarder import Forwarder

GATEWAY = web.AppKey("gateway", Gateway)
PIPELINE = web.AppKey("pipeline", Pipeline)


def public_pipeline(gateway: Gateway) -> Pipeline:
    """The request pipeline over a gateway's parts (it serves once the gateway has started)."""
    settings = gateway.settings
    forwarder = Forwarder(
        gateway.pool,
        addresses=gateway.addresses,
        max_body_bytes=settings.max_body_bytes,
        gateway_cors=gateway.cors.enabled,
    )
    return Pipeline(
        gateway.registry,
        gateway.authenticator,
        forwarder,
        cors=gateway.cors,
        addresses=gateway.addresses,
        limiter=gateway.limiter,
        observer=gateway.observer,
        executor=gateway.executor,
        sidecar_module=gateway.sidecar_module,
    )


def build_public_server(pipeline: Pipeline, limits: ClientLimits | None = None) -> web.Server:
    """What a worker serves on the public port: aiohttp's low-level server handing every
    request straight to the pipeline. The pipeline does its own routing, so an Application's
    router, match info and middleware chain would be per-request work for nothing. Its
    connections are the gateway's (`protocol.ClientConnection`): refused heads in the error
    shape, HTTP/1.x only, `limits` (default: the settings' defaults) on time and connections."""
    hide_server_version()
    return EdgeServer(
        pipeline.handle,
        limits=limits or ClientLimits(),
        observer=pipeline.observer,
        # While CORS is on every response says Vary: Origin, the edge's own refusals too.
        error_headers={"Vary": VARY} if pipeline.cors.enabled else {},
        # A client that goes away cancels its handler, which closes the upstream request.
        handler_cancellation=True,
        # Request bodies are forwarded as sent, compressed or not.
        auto_decompress=False,
        access_log=None,
    )


def build_public_app(gateway: Gateway) -> web.Application:
    """The same pipeline as an Application whose lifecycle opens and closes the gateway's
    resources: for in-process tests and embedding (workers use `build_public_server`).

    An Application's server is always aiohttp's own (`web.Server`, `RequestHandler`), so only
    the keep-alive and head-size limits apply here; refused heads in the error shape, the
    header and body timeouts and the connection cap need `build_public_server`."""
    hide_server_version()
    limits = ClientLimits.from_settings(gateway.settings)
    app = web.Application(
        handler_args={
            "keepalive_timeout": limits.keepalive,
            "max_line_size": MAX_URL_BYTES,
            "max_field_size": MAX_FIELD_BYTES,
        }
    )
    app[GATEWAY] = gateway
    app[PIPELINE] = pipeline = public_pipeline(gateway)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    async def no_expect_handler(_request: web.Request) -> None:
        """`Expect: 100-continue` is answered by the pipeline, once past auth and limits."""

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/{tail:.*}", pipeline.handle, expect_handler=no_expect_handler)
    return app


@web.middleware
async def _admin_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404/405 on the admin port, in the error shape like everything else."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        request_id = request_id_for(request.headers.get("X-Request-ID"))
        code = _ADMIN_CODES.get(exc.status, "bad_request")
        return error_response(_AdminError(exc.status, code, exc.reason), request_id)


class _AdminError(GatewayError):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


_ADMIN_CODES = {404: "not_found", 405: "method_not_allowed"}


def build_admin_app(gateway: Gateway) -> web.Application:
    """/healthz (alive), /readyz (tables loaded, not draining), /metrics (Prometheus)."""
    hide_server_version()
    app = web.Application(middlewares=[_admin_errors])
    app[GATEWAY] = gateway

    async def healthz(_request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        reason = gateway.not_ready_reason()
        if reason is None:
            body: dict[str, object] = {
                "status": "ready",
                "route_table_version": gateway.registry.version,
                **gateway.dependencies(),
            }
            return _json(200, body)
        request_id = request_id_for(request.headers.get("X-Request-ID"))
        return error_response(_AdminError(503, "not_ready", reason), request_id)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    return app


def _json(status: int, data: dict[str, object]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")
