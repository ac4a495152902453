"""A handler's failure through a running gateway and pool: the client gets the pool's status,
code and message under the gateway's request id, and the gateway's request log keeps the
message (the gateway once passed the pool's body on unread, so the log said nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from proxy.routing.manifest import parse_manifest
from proxy.store.routes import apply_manifest
from tests.support.gateway import MODULE_ID, serve_database_with_pool
from tests.support.polling import eventually

HANDLERS = {
    "/throws": "throw new Error('handler says no');",
    "/loops": "while (true) {}",
}


async def test_a_handler_failure_reaches_the_request_log_with_its_message(
    database: str, aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    routes = [
        {"path": path, "method": "GET", "handler_type": "function", "handler_code": code,
         "requires_auth": False}
        for path, code in HANDLERS.items()
    ]  # fmt: skip
    conn = await asyncpg.connect(database)
    try:
        await apply_manifest(
            conn, parse_manifest({"modules": [{"id": MODULE_ID, "name": "crm", "routes": routes}]})
        )
    finally:
        await conn.close()
    client, _ = await serve_database_with_pool(
        aiohttp_client, aiohttp_server, tmp_path, database,
        request_log_flush_seconds=0.1, executor_timeout_seconds=0.5,
    )  # fmt: skip

    r = await client.get("/api/modules/crm/throws", headers={"X-Request-ID": "req-throws"})
    assert (r.status, r.headers["X-Request-ID"]) == (500, "req-throws")
    assert await r.json() == {
        "error": "handler says no",
        "code": "handler_error",
        "request_id": "req-throws",
    }
    r = await client.get("/api/modules/crm/loops")
    body = await r.json()
    assert (r.status, body["code"]) == (504, "handler_timeout")
    assert body["request_id"] == r.headers["X-Request-ID"]

    conn = await asyncpg.connect(database)
    try:
        rows = await eventually(
            lambda: conn.fetch("SELECT path, status_code, error_message FROM module_api_logs"),
            until=lambda rows: len(rows) >= 2,
            what="the two calls' log rows",
        )
    finally:
        await conn.close()
    assert sorted(tuple(row) for row in rows) == [
        ("/loops", 504, "The handler took too long"),
        ("/throws", 500, "handler says no"),
    ]
