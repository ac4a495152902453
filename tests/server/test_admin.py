"""The admin port: health, readiness, metrics, and errors in the shape."""

from __future__ import annotations

from typing import Any

from proxy.server.app import build_admin_app
from tests.support.gateway import gateway_for, manifest


async def test_health_ready_metrics_and_draining(aiohttp_client: Any, tmp_path: Any) -> None:
    routes = [{"path": "/a", "method": "GET", "handler_type": "static", "handler_code": "x"}]
    gateway, public_app = gateway_for(tmp_path, manifest(None, routes))
    admin = await aiohttp_client(build_admin_app(gateway))

    r = await admin.get("/readyz")
    assert r.status == 503
    assert (await r.json())["code"] == "not_ready"

    await aiohttp_client(public_app)  # starts the gateway: the routes file loads
    r = await admin.get("/readyz")
    assert r.status == 200
    assert (await r.json())["status"] == "ready"
    assert (await admin.get("/healthz")).status == 200

    r = await admin.get("/metrics")
    text = await r.text()
    assert r.headers["Content-Type"].startswith("text/plain")
    assert 'modgate_route_reloads_total{result="ok",source="file"}' in text
    assert "modgate_route_table_modules 1.0" in text

    gateway.draining = True
    r = await admin.get("/readyz", headers={"X-Request-ID": "probe-1"})
    assert r.status == 503
    assert await r.json() == {"error": "draining", "code": "not_ready", "request_id": "probe-1"}


async def test_unknown_admin_path_has_the_error_shape(aiohttp_client: Any, tmp_path: Any) -> None:
    gateway, _ = gateway_for(tmp_path, {"modules": []})
    admin = await aiohttp_client(build_admin_app(gateway))
    r = await admin.get("/nope", headers={"X-Request-ID": "r1"})
    assert r.status == 404
    assert await r.json() == {"error": "Not Found", "code": "not_found", "request_id": "r1"}
    r = await admin.post("/metrics")
    assert r.status == 405
    assert (await r.json())["code"] == "method_not_allowed"
