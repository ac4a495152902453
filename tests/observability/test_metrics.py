"""/metrics after real traffic: names, labels, templates, promtool, and sums across workers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.server.app import build_admin_app
from tests.support.gateway import MODULE_ID, gateway_for, manifest
from tests.support.process import ServeProcess


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is needed: install the Debian package prometheus (make test does)")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_labels_after_real_traffic(
    aiohttp_client: Any, tmp_path: Path, upstream: Any
) -> None:
    routes = [
        {"path": "/contacts/:id", "method": "GET", "handler_type": "proxy"},
        {"path": "/static", "method": "GET", "handler_type": "static", "handler_code": "1"},
    ]
    gateway, app = gateway_for(tmp_path, manifest(upstream[0], routes))
    client = await aiohttp_client(app)
    admin = await aiohttp_client(build_admin_app(gateway))
    for contact in ("42", "43", "a%20b"):
        assert (await client.get(f"/api/modules/crm/contacts/{contact}")).status == 200
    await client.get(f"/api/modules/{MODULE_ID}/static")
    await client.get("/api/modules/crm/nope/1234")
    await client.get("/api/modules/no-such-module/x")
    await client.request("PROPFIND", "/api/modules/crm/static")

    text = await (await admin.get("/metrics")).text()
    requests = {
        (lbl["module"], lbl["route"], lbl["method"], lbl["status"]): value
        for lbl, value in _samples(text, "modgate_requests_total")
    }
    assert requests[("crm", "/contacts/:id", "GET", "200")] >= 3
    assert requests[("crm", "/static", "GET", "200")] >= 1
    assert requests[("crm", "unmatched", "GET", "404")] >= 1
    assert requests[("unknown", "unmatched", "GET", "404")] >= 1
    assert requests[("crm", "unmatched", "OTHER", "405")] >= 1
    for module, route, *_ in requests:
        assert "42" not in route and "1234" not in route and "no-such-module" not in module
    buckets = _samples(text, "modgate_request_duration_seconds_bucket")
    assert {lbl["le"] for lbl, _ in buckets} >= {"0.0005", "0.001", "30.0", "+Inf"}
    upstream_counts = _samples(text, "modgate_upstream_request_duration_seconds_count")
    assert any(lbl["upstream"] == upstream[0] and v >= 3 for lbl, v in upstream_counts)
    assert _samples(text, "modgate_route_table_routes")[0][1] >= 2
    assert _samples(text, "modgate_route_table_last_reload_timestamp_seconds")[0][1] > 0
    promtool_check(text)


async def test_workers_sum_their_counts(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    route = {
        "path": "/ping",
        "method": "GET",
        "handler_type": "static",
        "handler_code": "1",
        "requires_auth": False,
    }
    routes.write_text(
        yaml.safe_dump({"modules": [{"id": MODULE_ID, "name": "sum", "routes": [route]}]})
    )
    proc = ServeProcess("--workers", "2", "--routes-file", str(routes), cwd=str(tmp_path))
    await proc.start()
    try:
        # New connections each time, so the kernel spreads them over both workers.
        for _ in range(60):
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as s:
                async with s.get(f"{proc.url}/api/modules/sum/ping") as r:
                    assert r.status == 200
        totals = set()
        for _ in range(10):  # scrapes land on either worker: every one must see the sum
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
                s.get(f"{proc.admin_url}/metrics") as r,
            ):
                text = await r.text()
            totals.add(
                sum(
                    v
                    for lbl, v in _samples(text, "modgate_requests_total")
                    if lbl["module"] == "sum"
                )
            )
            await asyncio.sleep(0.01)
        assert totals == {60.0}
        promtool_check(text)
    finally:
        await proc.stop()
