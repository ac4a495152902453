"""Route tables from Postgres, kept live by LISTEN/NOTIFY, through the real gateway app."""

from __future__ import annotations

import asyncio
import statistics
import time
from functools import partial
from typing import Any

import asyncpg
import pytest

from proxy.routing.manifest import parse_manifest
from proxy.routing.registry import RouteRegistry
from proxy.server.app import build_public_app
from proxy.server.gateway import Gateway
from proxy.server.modes import postgres_store
from proxy.settings_views import DatabaseSettings
from proxy.store.pg_source import PostgresSource
from proxy.store.routes import apply_manifest
from tests.support.fault_proxy import FaultProxy
from tests.support.gateway import MODULE_ID, settings_for

OTHER_ID = "0b7e9a52-6a8f-4c55-9d6c-0cbbd3f1d2aa"


def _static(path: str, body: str, method: str = "GET") -> dict[str, Any]:
    return {
        "path": path,
        "method": method,
        "handler_type": "static",
        "handler_code": body,
        "requires_auth": False,
    }


async def _seed(dsn: str) -> None:
    manifest = parse_manifest(
        {
            "modules": [
                {
                    "id": MODULE_ID,
                    "name": "crm",
                    "routes": [_static("/v", '"v0"'), _static("/contacts/:id", '"contact"')],
                },
                {"id": OTHER_ID, "name": "booking", "routes": [_static("/b", '"b"')]},
            ]
        }
    )
    conn = await asyncpg.connect(dsn)
    try:
        await apply_manifest(conn, manifest)
    finally:
        await conn.close()


@pytest.fixture
def start_gateway(aiohttp_client: Any, tmp_path: Any) -> Any:
    async def start(
        dsn: str, *, heartbeat: float = 5.0, timeout: float = 2.0
    ) -> tuple[Any, Gateway]:
        # No request log: these tests cut Postgres for good, and a stopping gateway would
        # spend its shutdown grace retrying the rows it still holds.
        settings = settings_for(
            tmp_path,
            database_url=dsn,
            database_timeout=timeout,
            database_reconnect_max_seconds=0.5,
            request_log_enabled=False,
        )
        gateway = Gateway(settings, store=partial(postgres_store, heartbeat_seconds=heartbeat))
        client = await aiohttp_client(build_public_app(gateway))
        return client, gateway

    return start


async def _wait_for(predicate: Any, timeout: float = 10.0) -> float:
    """Poll `predicate` back to back; returns the seconds it took to become true."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if await predicate():
            return time.perf_counter() - start
        await asyncio.sleep(0)
    raise AssertionError("condition not reached in time")


async def _body(client: Any, path: str) -> tuple[int, Any]:
    r = await client.get(path)
    return r.status, await r.json()


async def test_plain_sql_change_is_live_and_latency_is_measured(
    database: str, start_gateway: Any
) -> None:
    await _seed(database)
    client, gateway = await start_gateway(database)
    await _wait_for(lambda: _ready(gateway))
    assert await _body(client, "/api/modules/crm/v") == (200, "v0")

    writer = await asyncpg.connect(database)
    latencies = []
    try:
        for i in range(1, 101):
            await writer.execute(
                "UPDATE module_api_routes SET handler_code = $1"
                " WHERE module_id = $2 AND path = '/v'",
                f'"v{i}"',
                MODULE_ID,
            )
            expected = (200, f"v{i}")

            async def live(expected: tuple[int, str] = expected) -> bool:
                return await _body(client, "/api/modules/crm/v") == expected

            latencies.append(await _wait_for(live))
    finally:
        await writer.close()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[98] * 1000
    print(
        f"\nNOTIFY propagation over 100 commits: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"max {latencies[-1] * 1000:.2f} ms"
    )


async def _ready(gateway: Gateway) -> bool:
    return gateway.ready


async def test_route_deactivated_module_removed_and_truncate(
    database: str, start_gateway: Any
) -> None:
    await _seed(database)
    client, gateway = await start_gateway(database)
    await _wait_for(lambda: _ready(gateway))
    writer = await asyncpg.connect(database)
    try:
        await writer.execute("UPDATE module_api_routes SET is_active = false WHERE path = '/v'")
        await _wait_for(lambda: _status(client, "/api/modules/crm/v", 404))
        assert (await _body(client, "/api/modules/crm/contacts/1"))[0] == 200

        await writer.execute("DELETE FROM module_api_routes WHERE module_id = $1", OTHER_ID)
        await writer.execute("DELETE FROM modgate_modules WHERE id = $1", OTHER_ID)
        await _wait_for(lambda: _code_is(client, "/api/modules/booking/b", "module_not_found"))

        await writer.execute("TRUNCATE module_api_routes CASCADE")
        await _wait_for(lambda: _status(client, "/api/modules/crm/contacts/1", 404))
    finally:
        await writer.close()


async def _code_is(client: Any, path: str, code: str) -> bool:
    status, body = await _body(client, path)
    return bool(status == 404 and body["code"] == code)


async def _status(client: Any, path: str, status: int) -> bool:
    r = await client.get(path)
    await r.read()
    return bool(r.status == status)


async def test_conflicting_row_keeps_last_good_table(database: str, start_gateway: Any) -> None:
    await _seed(database)
    client, gateway = await start_gateway(database)
    await _wait_for(lambda: _ready(gateway))
    version = gateway.registry.version
    writer = await asyncpg.connect(database)
    try:
        # Same shape as /contacts/:id, same method: the module cannot compile.
        await writer.execute(
            "INSERT INTO module_api_routes"
            " (module_id, path, method, handler_type, handler_code, requires_auth)"
            " VALUES ($1, '/contacts/:cid', 'GET', 'static', '\"dup\"', false)",
            MODULE_ID,
        )
        await writer.execute(
            "UPDATE module_api_routes SET handler_code = '\"b2\"' WHERE module_id = $1", OTHER_ID
        )
        await _wait_for(lambda: _body_is(client, "/api/modules/booking/b", "b2"))
    finally:
        await writer.close()
    assert gateway.registry.version > version
    assert await _body(client, "/api/modules/crm/contacts/1") == (200, "contact")


async def _body_is(client: Any, path: str, expected: Any) -> bool:
    return (await _body(client, path)) == (200, expected)


async def test_listener_killed_then_change_while_cut_off(database: str, start_gateway: Any) -> None:
    await _seed(database)
    client, gateway = await start_gateway(database)
    await _wait_for(lambda: _ready(gateway))
    admin = await asyncpg.connect(database)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'modgate-listen' AND datname = current_database()"
        )
        assert killed == 1
        # Committed while no gateway LISTENs: only the reconnect's full reload can see it.
        await admin.execute(
            "UPDATE module_api_routes SET handler_code = '\"after-kill\"' WHERE path = '/v'"
        )
        assert await _body(client, "/api/modules/crm/v") == (200, "v0")
        took = await _wait_for(lambda: _body_is(client, "/api/modules/crm/v", "after-kill"))
        print(f"\nchange made while the listener was cut off was live after {took * 1000:.0f} ms")
        listeners = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'modgate-listen' AND datname = current_database()"
        )
        assert listeners == 1
    finally:
        await admin.close()


async def test_unresponsive_postgres_keeps_serving_last_tables(
    database: str, start_gateway: Any
) -> None:
    await _seed(database)
    host_port = database.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = await FaultProxy(host, int(port)).start()
    try:
        client, gateway = await start_gateway(proxy.url_for(database), heartbeat=0.2, timeout=0.5)
        await _wait_for(lambda: _ready(gateway))
        proxy.set_mode("blackhole")
        writer = await asyncpg.connect(database)
        try:
            await writer.execute(
                "UPDATE module_api_routes SET handler_code = '\"during\"' WHERE path = '/v'"
            )
            deadline = time.perf_counter() + 1.5
            served = 0
            while time.perf_counter() < deadline:
                assert await _body(client, "/api/modules/crm/v") == (200, "v0")
                served += 1
                await asyncio.sleep(0.01)
            assert served > 50
            assert gateway.ready
            proxy.set_mode("pass")
            took = await _wait_for(lambda: _body_is(client, "/api/modules/crm/v", "during"))
            print(f"\nafter Postgres answered again the change was live in {took * 1000:.0f} ms")
        finally:
            await writer.close()
    finally:
        await proxy.close()


async def test_not_ready_until_postgres_answers(database: str, start_gateway: Any) -> None:
    await _seed(database)
    host_port = database.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = await FaultProxy(host, int(port)).start()
    proxy.set_mode("refuse")
    try:
        client, gateway = await start_gateway(proxy.url_for(database), timeout=0.5)
        await asyncio.sleep(0.3)
        assert not gateway.ready
        status, body = await _body(client, "/api/modules/crm/v")
        assert status == 503 and body["code"] == "service_unavailable"
        proxy.set_mode("pass")
        await _wait_for(lambda: _ready(gateway))
        assert await _body(client, "/api/modules/crm/v") == (200, "v0")
    finally:
        await proxy.close()


async def test_keys_in_memory_survive_a_full_reload_and_the_next_outage(database: str) -> None:
    """A full reload (after every reconnect) re-reads the cached keys instead of dropping
    them: a key not used between two outages still works during the second (it answered 503
    when the reload emptied the cache)."""
    from proxy.auth.api_keys import hash_key
    from proxy.auth.key_directory import KeyDirectory
    from proxy.store.keys import create_key

    await _seed(database)
    conn = await asyncpg.connect(database)
    try:
        _, key = await create_key(
            conn, module_id=MODULE_ID, site_id=MODULE_ID, agency_id=MODULE_ID, name="k"
        )
        _, revoked = await create_key(
            conn, module_id=MODULE_ID, site_id=MODULE_ID, agency_id=MODULE_ID, name="r"
        )
    finally:
        await conn.close()
    host_port = database.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = await FaultProxy(host, int(port)).start()
    registry = RouteRegistry()
    keys = KeyDirectory(capacity=100, negative_ttl=30, lookup_budget_per_second=100)
    pool = DatabaseSettings(
        url=proxy.url_for(database), pool_size=2, timeout=0.5, reconnect_max_seconds=0.5
    )
    source = PostgresSource(pool, registry, keys, heartbeat_seconds=0.2)
    keys.loader = source  # as the gateway's Postgres mode wires them (proxy/server/modes.py)
    await source.start()
    try:
        await _wait_for(lambda: _true(registry.loaded))
        assert await keys.lookup(hash_key(key)) is not None  # now cached
        assert await keys.lookup(hash_key(revoked)) is not None
        writer = await asyncpg.connect(database)
        try:  # revoked while cached: the reload must not keep it
            await writer.execute(
                "UPDATE module_api_keys SET revoked_at = NOW() WHERE key_hash = $1",
                hash_key(revoked),
            )
        finally:
            await writer.close()
        version = registry.version
        source.request_reload()  # the full reload a reconnect does
        await _wait_for(lambda: _true(registry.version != version))
        proxy.set_mode("blackhole")  # the next outage: nothing reaches Postgres
        found = await keys.lookup(hash_key(key))
        assert found is not None and found.record.key_hash == hash_key(key)
        assert hash_key(revoked) not in keys.cached_hashes()
    finally:
        await source.stop()
        await proxy.close()


async def _true(value: bool) -> bool:
    return value
