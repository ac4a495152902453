"""The access log: one JSON line per request, never a secret, switchable off."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from proxy.auth.api_keys import generate_key, hash_key
from proxy.observability.access_log import AccessLog
from tests.support.gateway import MODULE_ID, gateway_for, manifest
from tests.support.process import ServeProcess

SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"


async def test_lines_carry_the_facts_and_no_secrets(aiohttp_client: Any, tmp_path: Path) -> None:
    key = generate_key()
    data = manifest(
        None,
        [
            {
                "path": "/c/:id",
                "method": "GET",
                "handler_type": "static",
                "handler_code": "1",
                "requires_auth": True,
            }
        ],
    )
    data["api_keys"] = [
        {"module_id": MODULE_ID, "site_id": SITE, "key_hash": hash_key(key), "key_prefix": key[:12]}
    ]
    gateway, app = gateway_for(tmp_path, data, access_log=True)
    out = io.BytesIO()
    gateway.access_log = gateway.observer.access_log = AccessLog(out)
    client = await aiohttp_client(app)
    await client.get(
        "/api/modules/crm/c/7?token=s3cr3t", headers={"X-API-Key": key, "X-Request-ID": "rid-1"}
    )
    await client.get("/api/modules/crm/nowhere")
    gateway.access_log.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert {
        k: first[k] for k in ("request_id", "module", "route", "method", "path", "status", "caller")
    } == {
        "request_id": "rid-1",
        "module": "crm",
        "route": "/c/:id",
        "method": "GET",
        "path": "/api/modules/crm/c/7",
        "status": 200,
        "caller": key[:12],
    }
    assert first["duration_ms"] >= 0 and first["client"] == "127.0.0.1"
    assert lines[1]["route"] == "unmatched" and lines[1]["status"] == 404
    text = out.getvalue().decode()
    assert key not in text and "s3cr3t" not in text


async def test_serve_writes_json_lines_and_can_be_switched_off(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    route = {
        "path": "/a",
        "method": "GET",
        "handler_type": "static",
        "handler_code": "1",
        "requires_auth": False,
    }
    routes.write_text(
        yaml.safe_dump({"modules": [{"id": MODULE_ID, "name": "m", "routes": [route]}]})
    )
    for enabled in ("true", "false"):
        proc = ServeProcess(
            "--routes-file", str(routes), cwd=str(tmp_path), env={"MODGATE_ACCESS_LOG": enabled}
        )
        await proc.start()
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.get(f"{proc.url}/api/modules/m/a") as r:
                    assert r.status == 200
        await proc.stop()
        records = []
        for line in (await proc.output()).splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        if enabled == "true":
            assert [r["route"] for r in records] == ["/a"] * 3
        else:
            assert records == []
