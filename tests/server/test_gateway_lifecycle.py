"""The gateway's lifecycle (proxy/server/gateway.py): a gateway starts once; stopping it without
a start, or a second time, does nothing; and a logger whose stop raises leaves every other part
stopped and closed, the last key usage written while the Postgres pool was still open.

Real components throughout: the embedded mode over a manifest file, and a Postgres-mode gateway
on a database of its own, whose one part replaced is a request log that raises once stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import asyncpg
import pytest

from proxy.auth.key_directory import KeyDirectory
from proxy.errors import StoreError
from proxy.observability.request_log import RequestLog
from proxy.routing.manifest import parse_manifest
from proxy.routing.registry import RouteRegistry
from proxy.server.gateway import Gateway
from proxy.server.modes import Store, postgres_store
from proxy.settings import Settings
from proxy.store.keys import create_key
from proxy.store.pg_source import PostgresSource
from proxy.store.routes import apply_manifest
from tests.support.gateway import MODULE_ID, gateway_for, manifest, settings_for
from tests.support.polling import eventually

SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8e"
STATIC = {"path": "/hello", "method": "GET", "handler_type": "static", "handler_code": "{}"}


def gateway_tasks() -> set[str]:
    """The background tasks a gateway's parts run (all named modgate-...)."""
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("modgate-")}


async def test_a_gateway_starts_once(tmp_path: Path) -> None:
    gateway, _app = gateway_for(tmp_path, manifest(None, [STATIC]), access_log=True)
    await gateway.start()
    try:
        assert {"modgate-routes-file", "modgate-access-log"} <= gateway_tasks()
        with pytest.raises(RuntimeError, match="was already started: a Gateway starts once"):
            await gateway.start()
    finally:
        await gateway.stop()
    assert gateway_tasks() == set()
    with pytest.raises(RuntimeError, match="a Gateway starts once"):
        await gateway.start()  # what stop closed does not open again


async def test_stop_without_start_and_a_second_stop_do_nothing(tmp_path: Path) -> None:
    unstarted, _app = gateway_for(tmp_path, manifest(None, [STATIC]))
    await unstarted.stop()
    await unstarted.stop(deadline=0.0)

    gateway, _app = gateway_for(tmp_path, manifest(None, [STATIC]), access_log=True)
    await gateway.start()
    assert gateway.ready
    await gateway.stop()
    assert gateway_tasks() == set()
    await gateway.stop()
    assert gateway_tasks() == set()


class FailingRequestLog(RequestLog):
    """A request log whose stop does its work, then raises: a bug in a flush."""

    async def stop(self, deadline: float | None = None) -> None:
        await super().stop(deadline)
        raise RuntimeError("request log flush failed")


def with_failing_request_log(
    settings: Settings, registry: RouteRegistry, keys: KeyDirectory
) -> Store:
    parts = postgres_store(settings, registry, keys)
    source = parts.source
    assert isinstance(source, PostgresSource)
    log = settings.request_log
    failing = FailingRequestLog(
        source.write_request_logs,
        queue_size=log.queue_size,
        queue_bytes=log.queue_bytes,
        flush_seconds=log.flush_seconds,
        batch_rows=log.batch_rows,
    )
    return dataclasses.replace(parts, request_log=failing)


async def seed_key(dsn: str) -> str:
    """A module with one route and an API key of it; the key's id."""
    conn = await asyncpg.connect(dsn)
    try:
        modules = {"modules": [{"id": MODULE_ID, "name": "crm", "routes": [STATIC]}]}
        await apply_manifest(conn, parse_manifest(modules))
        record, _key = await create_key(
            conn, module_id=MODULE_ID, site_id=SITE, agency_id=SITE, name="lifecycle"
        )
        return record.id
    finally:
        await conn.close()


async def request_count(dsn: str, key_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        sql = "SELECT request_count FROM module_api_keys WHERE id = $1::uuid"
        return int(await conn.fetchval(sql, key_id))
    finally:
        await conn.close()


async def test_a_logger_whose_stop_raises_leaves_everything_else_stopped_and_closed(
    database: str, tmp_path: Path
) -> None:
    key_id = await seed_key(database)
    settings = settings_for(
        tmp_path,
        database_url=database,
        usage_flush_seconds=3600.0,  # written by stop only
    )
    gateway = Gateway(settings, store=with_failing_request_log)
    source, usage = gateway.source, gateway.usage
    assert isinstance(source, PostgresSource) and usage is not None
    await gateway.start()
    await eventually(lambda: gateway.ready)
    for _ in range(3):
        usage.record(key_id)

    with pytest.raises(RuntimeError, match="request log flush failed"):
        await gateway.stop()

    # Key usage was flushed beside the failing request log, while the pool was open ...
    assert await request_count(database, key_id) == 3
    assert usage.pending_requests == 0
    # ... and everything after the loggers closed all the same: the pool, the LISTEN task.
    with pytest.raises(StoreError, match="not connected to Postgres yet"):
        await source.execute(lambda conn: conn.fetchval("SELECT 1"))
    assert gateway_tasks() == set()
    await gateway.stop()  # nothing left to close, nothing raised again
