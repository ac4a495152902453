"""The two aiohttp applications: the public port (the pipeline) and the admin port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.server.gateway import Gateway
from proxy.server.pipeline import Pipeline

GATEWAY = web.AppKey("gateway", Gateway)
PIPELINE = web.AppKey("pipeline", Pipeline)


def build_public_app(gateway: Gateway) -> web.Application:
    """The public app; its lifecycle opens and closes the gateway's resources."""
    app = web.Application()
    app[GATEWAY] = gateway

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        assert gateway.session is not None
        settings = gateway.settings
        app[PIPELINE] = Pipeline(
            gateway.registry,
            gateway.session,
            max_body_bytes=settings.max_body_bytes,
            sidecar_module=settings.sidecar_module if settings.mode == "sidecar" else None,
        )
        yield
        await gateway.stop()

    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[PIPELINE].handle(request)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def build_admin_app(gateway: Gateway) -> web.Application:
    """/healthz (alive), /readyz (tables loaded, not draining), /metrics (Prometheus)."""
    app = web.Application()
    app[GATEWAY] = gateway

    async def healthz(_request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if gateway.ready:
            return _json(200, {"status": "ready", "route_table_version": gateway.registry.version})
        reason = "draining" if gateway.draining else "route tables not loaded yet"
        return _json(503, {"error": reason, "code": "not_ready", "request_id": ""})

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _json(status: int, data: dict[str, object]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")
