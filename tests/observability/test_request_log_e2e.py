"""Requests through a running gateway land in module_api_logs, every seed column filled."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import asyncpg

from proxy.routing.manifest import parse_manifest
from proxy.store.keys import create_key
from proxy.store.routes import apply_manifest
from tests.support.gateway import MODULE_ID, serve_database
from tests.support.polling import eventually

SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"
AGENCY = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"


async def test_requests_land_in_module_api_logs(
    database: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    routes = [
        {
            "path": "/contacts/:id",
            "method": "GET",
            "handler_type": "static",
            "handler_code": "{}",
            "required_scopes": ["read:contacts"],
        },
    ]
    conn = await asyncpg.connect(database)
    try:
        await apply_manifest(
            conn, parse_manifest({"modules": [{"id": MODULE_ID, "name": "crm", "routes": routes}]})
        )
        record, key = await create_key(
            conn,
            module_id=MODULE_ID,
            site_id=SITE,
            agency_id=AGENCY,
            name="logs",
            scopes=["read:contacts"],
        )
        route_id = await conn.fetchval("SELECT id::text FROM module_api_routes")
    finally:
        await conn.close()
    client, _ = await serve_database(
        aiohttp_client, tmp_path, database, request_log_flush_seconds=0.1
    )
    headers = {"X-API-Key": key, "User-Agent": "log-test/1.0"}
    sent = time.perf_counter()
    assert (await client.get("/api/modules/crm/contacts/9?a=1&b=x", headers=headers)).status == 200
    assert (await client.get("/api/modules/crm/contacts/9")).status == 401

    conn = await asyncpg.connect(database)
    try:
        rows = await eventually(
            lambda: conn.fetch("SELECT * FROM module_api_logs ORDER BY created_at"),
            until=lambda rows: len(rows) >= 2,
            what="the two requests' log rows",
        )
        landed = time.perf_counter() - sent
    finally:
        await conn.close()
    print(f"\nrequest log rows landed {landed * 1000:.0f} ms after the requests")
    assert len(rows) == 2
    ok, refused = rows
    assert str(ok["module_id"]) == MODULE_ID and str(ok["site_id"]) == SITE
    assert str(ok["route_id"]) == route_id
    assert (ok["method"], ok["path"], ok["status_code"]) == ("GET", "/contacts/9", 200)
    assert json.loads(ok["query_params"]) == {"a": "1", "b": "x"}
    assert (ok["auth_type"], str(ok["api_key_id"])) == ("api_key", record.id)
    assert ok["user_id"] is None and ok["error_message"] is None
    assert ok["ip_address"] == "127.0.0.1" and ok["user_agent"] == "log-test/1.0"
    assert ok["response_time_ms"] >= 0
    assert refused["status_code"] == 401 and refused["auth_type"] == "none"
    assert refused["error_message"] == "Missing or invalid credentials"
