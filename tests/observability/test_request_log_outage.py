"""Request logs and key usage survive a Postgres outage: a real gateway (in process, and a real
`modgate serve` for SIGTERM) talks to Postgres through a fault proxy that cuts it.

Rows must all land once Postgres is back, in the order they were recorded (checked by
transaction id and heap position, i.e. by how they were written), none twice; only a full
queue drops, exactly the overflow; stopping flushes within the grace.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from proxy.routing.manifest import parse_manifest
from proxy.server.gateway import Gateway
from proxy.store.keys import create_key
from proxy.store.routes import apply_manifest
from tests.observability.test_request_log import dropped, sample
from tests.support.fault_proxy import FaultProxy
from tests.support.gateway import MODULE_ID, serve_database
from tests.support.polling import eventually
from tests.support.process import ServeProcess

SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8e"


@dataclass
class Seeded:
    dsn: str
    key: str
    key_id: str
    proxy: FaultProxy

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def logged(self) -> int:
        return int((await self.fetch("SELECT count(*) FROM module_api_logs"))[0][0])

    async def paths_as_written(self) -> list[str]:
        """Every row's path, in the order Postgres stored them: by transaction, then by
        position in the heap (a COPY appends its rows in order to a table nothing deletes from)."""
        rows = await self.fetch(
            "SELECT path FROM module_api_logs ORDER BY xmin::text::bigint, ctid"
        )
        return [r["path"] for r in rows]

    async def request_count(self) -> int:
        rows = await self.fetch(
            "SELECT request_count FROM module_api_keys WHERE id = $1::uuid", self.key_id
        )
        return int(rows[0][0])


def paths(n: int, start: int = 0) -> list[str]:
    return [f"/contacts/{i}" for i in range(start, start + n)]


@pytest.fixture
async def seeded(database: str) -> AsyncIterator[Seeded]:
    conn = await asyncpg.connect(database)
    try:
        route = {
            "path": "/contacts/:id",
            "method": "GET",
            "handler_type": "static",
            "handler_code": "{}",
            "required_scopes": ["read:contacts"],
        }
        manifest = {"modules": [{"id": MODULE_ID, "name": "crm", "routes": [route]}]}
        await apply_manifest(conn, parse_manifest(manifest))
        record, key = await create_key(
            conn, module_id=MODULE_ID, site_id=SITE, agency_id=SITE, name="outage",
            scopes=["read:contacts"],
        )  # fmt: skip
    finally:
        await conn.close()
    host, port = "127.0.0.1", int(database.rsplit(":", 1)[1].split("/")[0])
    proxy = await FaultProxy(host, port).start()
    yield Seeded(database, key, record.id, proxy)
    await proxy.close()


async def start_gateway(
    seeded: Seeded, aiohttp_client: Any, tmp_path: Path, **overrides: object
) -> tuple[Gateway, Any]:
    settings: dict[str, Any] = {
        "database_timeout": 1.0,
        "database_reconnect_max_seconds": 0.2,
        "request_log_flush_seconds": 0.05,
        "usage_flush_seconds": 0.1,
        **overrides,
    }
    url = seeded.proxy.url_for(seeded.dsn)
    client, gateway = await serve_database(aiohttp_client, tmp_path, url, **settings)
    return gateway, client


async def send(client: Any, seeded: Seeded, numbers: range) -> None:
    """One request after another (so the order they are logged in is known), each 200."""
    for n in numbers:
        response = await client.get(f"/api/modules/crm/contacts/{n}", headers=seeded.headers)
        assert response.status == 200


def drops() -> tuple[float, ...]:
    return (
        dropped("queue_full"),
        dropped("write_failed"),
        dropped("shutdown"),
        sample("modgate_key_usage_dropped_total", reason="too_many_keys"),
        sample("modgate_key_usage_dropped_total", reason="shutdown"),
    )


@pytest.mark.parametrize("cut", ["refuse", "blackhole"])
async def test_outage_under_a_stream_of_requests_loses_nothing(
    seeded: Seeded, aiohttp_client: Any, tmp_path: Path, cut: str
) -> None:
    gateway, client = await start_gateway(seeded, aiohttp_client, tmp_path)
    log = gateway.request_log
    assert log is not None
    before = drops()
    await send(client, seeded, range(100))
    await eventually(seeded.logged, timeout=10)  # the first rows are in: Postgres works
    await eventually(lambda: log.held == 0, timeout=10)

    seeded.proxy.set_mode(cut)  # refuse: Postgres stopped; blackhole: a silent partition
    await send(client, seeded, range(100, 250))
    await eventually(lambda: log.failing, timeout=10)
    await send(client, seeded, range(250, 300))  # still served, still logged
    assert await seeded.logged() < 300
    seeded.proxy.set_mode("pass")

    await eventually(lambda: _equals(seeded.logged(), 300), timeout=20)
    await eventually(lambda: _equals(seeded.request_count(), 300), timeout=20)
    assert await seeded.paths_as_written() == paths(300)  # every row once, in order
    assert drops() == before


async def test_a_full_queue_drops_exactly_the_overflow_and_keeps_the_rest(
    seeded: Seeded, aiohttp_client: Any, tmp_path: Path
) -> None:
    gateway, client = await start_gateway(
        seeded, aiohttp_client, tmp_path, request_log_queue_size=100
    )
    log = gateway.request_log
    assert log is not None
    await send(client, seeded, range(1))
    await eventually(lambda: log.held == 0 and not log.failing, timeout=10)
    await eventually(lambda: _equals(seeded.logged(), 1), timeout=10)

    seeded.proxy.set_mode("refuse")
    before = drops()
    await send(client, seeded, range(1, 151))  # 150 rows into a queue of 100
    after = drops()
    assert after[0] - before[0] == 50  # queue_full: exactly the overflow
    assert after[1:] == before[1:]
    assert log.held == 100
    seeded.proxy.set_mode("pass")

    await eventually(lambda: log.held == 0, timeout=20)
    assert await seeded.paths_as_written() == paths(101)  # the first 100 of the 150
    await eventually(lambda: _equals(seeded.request_count(), 151), timeout=20)


async def _equals(value: Any, expected: object) -> bool:
    return bool(await value == expected)


# -- SIGTERM ---------------------------------------------------------------------------------


async def serve_through(seeded: Seeded, tmp_path: Path, grace: float) -> ServeProcess:
    env = {
        "MODGATE_DATABASE_URL": seeded.proxy.url_for(seeded.dsn),
        "MODGATE_DATABASE_TIMEOUT": "1",
        "MODGATE_DATABASE_RECONNECT_MAX_SECONDS": "0.2",
        "MODGATE_ACCESS_LOG": "false",
        "MODGATE_REQUEST_LOG_FLUSH_SECONDS": "0.05",
        "MODGATE_USAGE_FLUSH_SECONDS": "600",  # only the stop writes the usage counts
        "MODGATE_SHUTDOWN_GRACE_SECONDS": str(grace),
    }
    (tmp_path / "gw.yaml").write_text("{}\n")
    return await ServeProcess("--config", str(tmp_path / "gw.yaml"), env=env).start()


async def send_to(proc: ServeProcess, seeded: Seeded, numbers: range) -> None:
    async with aiohttp.ClientSession() as session:
        for n in numbers:
            url = f"{proc.url}/api/modules/crm/contacts/{n}"
            async with session.get(url, headers=seeded.headers) as response:
                assert response.status == 200


async def test_sigterm_flushes_what_the_outage_held_once_postgres_returns_within_the_grace(
    seeded: Seeded, tmp_path: Path
) -> None:
    proc = await serve_through(seeded, tmp_path, grace=15)
    try:
        await send_to(proc, seeded, range(50))
        await eventually(lambda: _equals(seeded.logged(), 50), timeout=10)
        seeded.proxy.set_mode("refuse")
        await send_to(proc, seeded, range(50, 120))
        proc.signal(signal.SIGTERM)
        await eventually(lambda: "draining" in proc.output_so_far(), timeout=10)
        await eventually(lambda: "writes failing" in proc.output_so_far(), timeout=10)
        seeded.proxy.set_mode("pass")  # back within the grace
        assert await proc.wait(20) == 0
    finally:
        await proc.stop()
    output = await proc.output()
    assert "not written by the end" not in output, output
    assert await seeded.paths_as_written() == paths(120)
    assert await seeded.request_count() == 120


async def test_sigterm_with_postgres_still_down_counts_and_logs_the_rest_once(
    seeded: Seeded, tmp_path: Path
) -> None:
    proc = await serve_through(seeded, tmp_path, grace=1)
    try:
        await send_to(proc, seeded, range(30))
        await eventually(lambda: _equals(seeded.logged(), 30), timeout=10)
        seeded.proxy.set_mode("refuse")
        await send_to(proc, seeded, range(30, 70))
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert await proc.wait(20) == 0
        took = time.monotonic() - started
    finally:
        await proc.stop()
    output = await proc.output()
    # grace 1 s (the drain is instant here; the floor is 1 s too), plus the process's exit
    assert took < 1 + 5, output
    lines = output.splitlines()
    dropped_rows = [line for line in lines if "rows not written by the end" in line]
    assert len(dropped_rows) == 1 and "request log: 40 rows not written" in dropped_rows[0]
    dropped_usage = [line for line in lines if "requests on 1 keys not written" in line]
    assert len(dropped_usage) == 1 and "key usage: 70 requests" in dropped_usage[0]
    assert await seeded.logged() == 30
