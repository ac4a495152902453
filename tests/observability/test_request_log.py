"""The request log and its retention, against a real Postgres (and a fault proxy for outages)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from proxy.errors import StoreError
from proxy.observability.request_log import COLUMNS, LogBatch, LogRow, LogWriter, RequestLog
from proxy.retry import Backoff
from proxy.routing.registry import RouteRegistry
from proxy.settings_views import DatabaseSettings
from proxy.store.logs import (
    PRUNE_LOCK_ID,
    LogPruner,
    prune_if_leader,
    prune_logs,
    write_logs,
)
from proxy.store.pg_source import PostgresSource
from tests.support.fault_proxy import FaultProxy
from tests.support.polling import eventually

MODULE = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d01"
SITE = "5e0c1b2a-0000-4000-8000-00000000a001"
USER = "c0ffee00-0000-4000-8000-00000000c001"
NOW = datetime(2030, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)


def row(
    n: int = 0,
    *,
    module: str = MODULE,
    site: str | None = SITE,
    route: str | None = None,
    key: str | None = None,
    user: str | None = None,
    created_at: datetime | None = None,
) -> LogRow:
    return (
        module, site, route, "GET", f"/contacts/{n}", None, "none", key, user, 200, 3, None,
        "10.0.0.1", "curl/8", created_at or datetime.now(UTC), None,
    )  # fmt: skip


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def dropped(reason: str) -> float:
    return sample("modgate_request_log_dropped_total", reason=reason)


def written() -> float:
    return sample("modgate_request_log_written_total")


def writer_for(source: PostgresSource) -> LogWriter:
    """What the gateway passes: write_logs on the PostgresSource pool."""
    return lambda batch: source.execute(lambda conn: write_logs(conn, batch.rows, batch.attempt))


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def count(dsn: str) -> int:
    return int((await query(dsn, "SELECT count(*) FROM module_api_logs"))[0][0])


async def has_rows(dsn: str, n: int) -> bool:
    return await count(dsn) >= n


async def stored(dsn: str) -> list[dict[str, Any]]:
    """Every row, UUIDs and JSONB as text, in path order."""
    cols = ", ".join(
        f"{c}::text AS {c}" if c.endswith("_id") or c == "query_params" else c for c in COLUMNS
    )
    rows = await query(dsn, f"SELECT {cols} FROM module_api_logs ORDER BY path")
    return [dict(r) for r in rows]


async def insert_route_and_key(dsn: str) -> tuple[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        route = await conn.fetchval(
            "INSERT INTO module_api_routes (module_id, path, method) VALUES ($1, '/c', 'GET') "
            "RETURNING id::text",
            MODULE,
        )
        key = await conn.fetchval(
            "INSERT INTO module_api_keys (module_id, site_id, agency_id, key_prefix, key_hash,"
            " name) VALUES ($1, $2, $2, 'dmc_live_abc', $3, 'k') RETURNING id::text",
            MODULE,
            SITE,
            uuid.uuid4().hex,
        )
    finally:
        await conn.close()
    return route, key


@pytest.fixture
async def source(database: str) -> AsyncIterator[PostgresSource]:
    src = PostgresSource(
        DatabaseSettings(url=database, pool_size=2, timeout=2.0, reconnect_max_seconds=0.2),
        RouteRegistry(),
    )
    await src.start()
    await eventually(lambda: src.connected)
    yield src
    await src.stop()


# -- writing --------------------------------------------------------------------------------


async def test_rows_below_a_batch_are_written_by_the_timer_with_every_column(
    source: PostgresSource, database: str
) -> None:
    route, key = await insert_route_and_key(database)
    log = RequestLog(writer_for(source), queue_size=100, flush_seconds=0.25, batch_rows=100)
    await log.start()
    full: LogRow = (
        MODULE, SITE, route, "POST", "/a/contacts", '{"q": "x", "tags": ["a", "b"]}', "api_key",
        key, USER, 201, 17, None, "203.0.113.9", "Mozilla/5.0 (X11)", NOW, None,
    )  # fmt: skip
    empty: LogRow = (
        MODULE, None, None, "GET", "/b/missing", None, "none", None, None, 404, 0,
        "route not found", None, None, NOW + timedelta(seconds=1), None,
    )  # fmt: skip
    before = written()
    log.record(full)
    log.record(empty)
    # Two rows fill no batch of 100, and stop() has not been called: only the flush timer
    # (0.25 s) writes them. The wait's bound catches a timer that never fires; how soon it
    # fires is the timer's setting, not something a loaded machine can measure reliably.
    await eventually(lambda: has_rows(database, 2), what="the timer wrote both rows")
    await log.stop()

    first, second = await stored(database)
    expected: dict[str, Any] = dict(zip(COLUMNS, full, strict=True))
    assert json.loads(first.pop("query_params")) == json.loads(expected.pop("query_params"))
    assert first == expected
    assert first["created_at"] == NOW and first["created_at"].tzinfo is not None
    assert second == dict(zip(COLUMNS, empty, strict=True))
    assert written() - before == 2


async def test_values_that_would_fail_a_copy_are_made_storable(database: str) -> None:
    rows: list[LogRow] = [
        # A JWT `sub` and a site id that are not UUIDs: NULL, not a failed batch.
        (MODULE, "site-42", None, "GET", "/1", None, "jwt", None, "auth0|abc", 200, 1, None,
         None, None, NOW, None),
        # Other UUID spellings are stored canonically.
        (MODULE.upper(), "{" + SITE + "}", None, "GET", "/2", None, "jwt", None,
         USER.replace("-", ""), 200, 1, None, None, None, NOW, None),
        # NUL characters (TEXT refuses them, JSONB refuses \u0000), a lone surrogate (what
        # aiohttp makes of a non-UTF-8 header byte), a huge User-Agent, out-of-range numbers.
        (MODULE, None, None, "GET", "/3\x00x", '{"a": "b\\u0000c"}', "none", None, None,
         2**40, -(2**40), "boom\x00", "10.0.0.1", "x\udcff" + "y" * 5000, NOW, None),
        # No module id that Postgres can store: left out, the rest of the batch is written.
        ("not-a-module", None, None, "GET", "/4", None, "none", None, None, 200, 1, None,
         None, None, NOW, None),
    ]  # fmt: skip
    conn = await asyncpg.connect(database)
    try:
        assert await write_logs(conn, rows) == 3
    finally:
        await conn.close()
    one, two, three = await stored(database)
    assert (one["site_id"], one["user_id"], one["module_id"]) == (None, None, MODULE)
    assert (two["module_id"], two["site_id"], two["user_id"]) == (MODULE, SITE, USER)
    assert three["path"] == "/3x" and three["error_message"] == "boom"
    assert json.loads(three["query_params"]) == {"a": "bc"}
    assert three["user_agent"] == "x?" + "y" * 510
    assert (three["status_code"], three["response_time_ms"]) == (2**31 - 1, -(2**31))


async def test_route_or_key_deleted_before_the_write_is_logged_as_null(
    database: str,
) -> None:
    gone_route, gone_key = await insert_route_and_key(database)
    kept_route = (
        await query(
            database,
            "INSERT INTO module_api_routes (module_id, path, method) VALUES ($1, '/k', 'GET') "
            "RETURNING id::text",
            MODULE,
        )
    )[0][0]
    rows = [row(1, route=gone_route, key=gone_key), row(2, route=kept_route)]
    await query(database, "DELETE FROM module_api_routes WHERE id = $1", gone_route)
    await query(database, "DELETE FROM module_api_keys WHERE id = $1", gone_key)
    conn = await asyncpg.connect(database)
    try:
        assert await write_logs(conn, rows) == 2
    finally:
        await conn.close()
    first, second = await stored(database)
    assert (first["route_id"], first["api_key_id"]) == (None, None)
    assert second["route_id"] == kept_route


async def test_write_10k_rows_in_one_call(database: str) -> None:
    rows = [
        (MODULE, SITE, None, "GET", f"/contacts/{n}", '{"page": "2"}', "jwt", None, USER, 200,
         n % 500, None, "203.0.113.9", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", NOW,
         None)
        for n in range(10_000)
    ]  # fmt: skip
    conn = await asyncpg.connect(database)
    try:
        await write_logs(conn, rows[:10])  # the statement cache warm, as a running gateway has
        assert await write_logs(conn, rows) == 10_000
    finally:
        await conn.close()
    assert await count(database) == 10_010


# -- queueing and failures ------------------------------------------------------------------


async def test_full_queue_drops_and_counts_without_waiting() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    batches: list[int] = []

    async def slow_writer(batch: LogBatch) -> None:
        entered.set()
        await release.wait()  # Postgres that does not answer
        batches.append(len(batch.rows))

    log = RequestLog(slow_writer, queue_size=100, flush_seconds=60, batch_rows=50)
    await log.start()
    before_full, before_written = dropped("queue_full"), written()
    for n in range(90):
        log.record(row(n))
    await asyncio.wait_for(entered.wait(), 1)  # 50 rows in flight, 40 queued
    assert log.held == 90  # rows in flight count against the bound until they are written

    # All 10,000 calls return while the writer is still parked: record() never waits for it.
    # The 10 free slots take rows and the rest are dropped.
    for n in range(10_000):
        log.record(row(n))
    assert batches == []
    assert dropped("queue_full") - before_full == 10_000 - 10  # only the 10 free slots
    release.set()
    await log.stop()
    assert batches == [50, 50]
    assert written() - before_written == 100
    assert sample("modgate_request_log_queue_depth") == 0


async def test_postgres_down_then_back(database: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modgate.request_log")
    host, port = "127.0.0.1", int(database.rsplit(":", 1)[1].split("/")[0])
    proxy = await FaultProxy(host, port).start()
    source = PostgresSource(
        DatabaseSettings(
            url=proxy.url_for(database), pool_size=1, timeout=1.0, reconnect_max_seconds=0.2
        ),
        RouteRegistry(),
    )
    await source.start()
    attempts: list[int] = []
    pg_writer = writer_for(source)

    async def writer(batch: LogBatch) -> int | None:
        attempts.append(len(batch.rows))
        return await pg_writer(batch)

    log = RequestLog(
        writer, queue_size=1000, flush_seconds=0.05, batch_rows=10,
        backoff=Backoff(maximum=0.2, initial=0.05),
    )  # fmt: skip
    try:
        await eventually(lambda: source.connected)
        await log.start()
        before_failed, before_written = dropped("write_failed"), written()
        proxy.set_mode("refuse")
        for n in range(25):
            log.record(row(n))
        # The first batch fails and is kept; it is tried again after the backoff's delay,
        # the same 10 rows each time, while the other 15 wait behind it.
        await eventually(lambda: len(attempts) >= 3)
        assert attempts[:3] == [10, 10, 10] and log.held == 25
        proxy.set_mode("pass")
        await eventually(lambda: written() - before_written == 25)
    finally:
        await log.stop()
        await source.stop()
        await proxy.close()

    assert [r["path"] for r in await stored(database)] == sorted(
        f"/contacts/{n}" for n in range(25)
    )
    assert dropped("write_failed") == before_failed
    records = [r for r in caplog.records if r.name == "modgate.request_log"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]  # one per streak
    assert "writes recovered after" in records[1].getMessage()
    assert "(dropped meanwhile, queue_full: 0)" in records[1].getMessage()


async def test_stop_writes_what_is_queued(source: PostgresSource, database: str) -> None:
    log = RequestLog(writer_for(source), queue_size=100, flush_seconds=60, batch_rows=3)
    await log.start()
    for n in range(2):  # under batch_rows: only the timer (a minute away) would write them
        log.record(row(n))
    await log.stop()
    assert await count(database) == 2


async def test_stop_without_a_deadline_tries_once_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []

    async def broken(batch: LogBatch) -> None:
        attempts.append(len(batch.rows))
        raise StoreError("Postgres is down")

    log = RequestLog(broken, queue_size=100, flush_seconds=60, batch_rows=4)
    await log.start()
    before = dropped("shutdown")
    for n in range(3):
        log.record(row(n))
    await log.stop()
    assert attempts == [3]
    assert dropped("shutdown") - before == 3
    assert log.held == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "modgate.request_log"]
    assert lines[-1] == (
        "request log: 3 rows not written by the end of the shutdown grace, dropped"
    )


# -- retention ------------------------------------------------------------------------------


async def seed_ages(dsn: str, old: int, recent: int) -> None:
    now = datetime.now(UTC)
    rows = [row(n, created_at=now - timedelta(days=40, minutes=n)) for n in range(old)]
    rows += [row(1000 + n, created_at=now - timedelta(days=1)) for n in range(recent)]
    conn = await asyncpg.connect(dsn)
    try:
        await write_logs(conn, rows)
    finally:
        await conn.close()


async def test_prune_deletes_only_old_rows_in_batches(database: str) -> None:
    await seed_ages(database, old=25, recent=5)
    statements: list[str] = []
    conn = await asyncpg.connect(database)
    try:
        conn.add_query_logger(lambda q: statements.append(q.query))
        assert await prune_logs(conn, timedelta(days=30), batch=10) == 25
        assert await prune_logs(conn, timedelta(days=30), batch=10) == 0
    finally:
        await conn.close()
    deletes = [s for s in statements if s.lstrip().startswith("DELETE")]
    assert len(deletes) == 3 + 1  # 10 + 10 + 5, then one empty batch on the second run
    ages = await query(database, "SELECT count(*) FROM module_api_logs WHERE created_at > NOW()"
                       " - INTERVAL '2 days'")  # fmt: skip
    assert await count(database) == ages[0][0] == 5


async def test_prune_if_leader_skips_while_another_session_prunes(database: str) -> None:
    await seed_ages(database, old=3, recent=1)
    holder = await asyncpg.connect(database)
    conn = await asyncpg.connect(database)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", PRUNE_LOCK_ID)
        assert await prune_if_leader(conn, timedelta(days=30)) is None
        assert await count(database) == 4
        await holder.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_ID)
        assert await prune_if_leader(conn, timedelta(days=30)) == 3
        # ... and the lock is free again for the next gateway.
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_ID)
    finally:
        await conn.close()
        await holder.close()
    assert await count(database) == 1


async def test_log_pruner_deletes_old_rows(
    source: PostgresSource, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modgate.request_log")
    await seed_ages(database, old=12, recent=2)
    pruner = LogPruner(source.execute, retention_days=30, interval=3600, first_delay=0.01)
    await pruner.start()
    try:
        await eventually(lambda: any("deleted" in r.getMessage() for r in caplog.records))
    finally:
        await pruner.stop()
    assert await count(database) == 2
    assert "deleted 12 request log rows older than 30 days" in caplog.text


async def test_log_pruner_keeps_running_through_store_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def down(work: Any) -> Any:
        raise StoreError("not connected to Postgres yet")

    pruner = LogPruner(down, retention_days=7, interval=0.01, first_delay=0)
    await pruner.start()
    try:
        await eventually(lambda: len(caplog.records) >= 3)
    finally:
        await pruner.stop()
    assert {r.levelno for r in caplog.records} == {logging.WARNING}
    assert "request log prune failed" in caplog.records[0].getMessage()
