"""write_once against a real Postgres: a retried batch is never written twice, even when the
answer to its COMMIT was lost (a fault proxy mutes the server right at COMMIT), and a
transaction a partition left open on the server does not hold up the retry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from proxy.errors import StoreError
from proxy.observability.request_log import LogRow
from proxy.store.commit import IDLE_IN_TRANSACTION_MS, WriteAttempt, write_once
from proxy.store.keys import create_key, record_usage
from proxy.store.logs import write_logs
from tests.support.fault_proxy import FaultProxy
from tests.support.polling import eventually

MODULE = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d02"
SITE = "5e0c1b2a-0000-4000-8000-00000000a002"


def rows(n: int) -> list[LogRow]:
    now = datetime.now(UTC)
    return [
        (MODULE, SITE, None, "GET", f"/c/{i}", None, "none", None, None, 200, 1, None, None,
         None, now, None)
        for i in range(n)
    ]  # fmt: skip


async def log_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM module_api_logs"))


@pytest.fixture
async def proxy(database: str) -> AsyncIterator[FaultProxy]:
    host, port = "127.0.0.1", int(database.rsplit(":", 1)[1].split("/")[0])
    fault = await FaultProxy(host, port).start()
    yield fault
    await fault.close()


@pytest.fixture
async def direct(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


async def test_lost_commit_answer_is_asked_about_not_written_again(
    proxy: FaultProxy, direct: asyncpg.Connection, database: str
) -> None:
    conn = await asyncpg.connect(proxy.url_for(database), command_timeout=0.5)
    attempt: WriteAttempt[int] = WriteAttempt()
    batch = rows(5)
    proxy.switch_on(b"COMMIT", "mute")  # the server commits; its answer never arrives
    with pytest.raises(StoreError):
        await write_logs(conn, batch, attempt)
    conn.terminate()
    assert attempt.unsettled
    assert await log_count(direct) == 5  # it did commit

    proxy.set_mode("pass")
    retry = await asyncpg.connect(proxy.url_for(database))
    try:
        assert await write_logs(retry, batch, attempt) == 5  # answered from txid_status
        assert not attempt.unsettled
        assert await log_count(direct) == 5  # not 10
        assert await write_logs(retry, batch, attempt) == 5  # a settled attempt writes anew
    finally:
        await retry.close()
    assert await log_count(direct) == 10


async def test_commit_that_never_arrived_is_written_on_retry(
    proxy: FaultProxy, direct: asyncpg.Connection, database: str
) -> None:
    conn = await asyncpg.connect(proxy.url_for(database), command_timeout=0.5)
    attempt: WriteAttempt[int] = WriteAttempt()
    proxy.switch_on(b"COMMIT", "blackhole")  # COMMIT held back: a partition
    with pytest.raises(StoreError):
        await write_logs(conn, rows(3), attempt)
    conn.terminate()
    proxy.drop_all()  # the partition ends with the connection closed: the server aborts
    proxy.set_mode("pass")
    assert await log_count(direct) == 0
    assert attempt.unsettled

    retry = await asyncpg.connect(proxy.url_for(database))

    async def written() -> bool:
        try:
            return await write_logs(retry, rows(3), attempt) == 3
        except StoreError as exc:  # the server may still be ending the old session
            assert "still open on the server" in str(exc)
            return False

    try:
        await eventually(written)
    finally:
        await retry.close()
    assert await log_count(direct) == 3


async def test_transaction_left_open_by_a_partition_is_ended_then_written(
    direct: asyncpg.Connection, database: str
) -> None:
    # The state a partition leaves on the server: our transaction open, its client gone.
    orphan = await asyncpg.connect(database)
    attempt: WriteAttempt[int] = WriteAttempt()
    await orphan.execute("BEGIN")
    attempt.xid, attempt.backend_pid = await orphan.fetchrow(
        "SELECT txid_current(), pg_backend_pid()"
    )
    await orphan.copy_records_to_table(
        "module_api_logs", records=[(MODULE, "/orphan", "GET", "none", 200)],
        columns=["module_id", "path", "method", "auth_type", "status_code"],
    )  # fmt: skip

    with pytest.raises(StoreError, match="still open on the server"):
        await write_logs(direct, rows(2), attempt)  # ... and its backend is told to end

    async def ended() -> bool:
        query = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1"
        return bool(await direct.fetchval(query, attempt.backend_pid))

    await eventually(ended)
    assert await write_logs(direct, rows(2), attempt) == 2
    assert await direct.fetchval("SELECT count(*) FROM module_api_logs WHERE path = '/orphan'") == 0
    assert await log_count(direct) == 2
    orphan.terminate()


async def test_failure_before_commit_leaves_nothing_to_ask(direct: asyncpg.Connection) -> None:
    attempt: WriteAttempt[int] = WriteAttempt()

    async def boom(conn: asyncpg.Connection) -> int:
        await conn.execute("SELECT 1")
        raise asyncpg.DataError("no")

    with pytest.raises(asyncpg.DataError):
        await write_once(direct, attempt, boom)
    assert not attempt.unsettled
    assert not direct.is_in_transaction()


async def test_usage_counts_are_not_added_twice_after_a_lost_commit_answer(
    proxy: FaultProxy, direct: asyncpg.Connection, database: str
) -> None:
    record, _ = await create_key(
        direct, module_id=MODULE, site_id=SITE, agency_id=SITE, name="u", scopes=[]
    )
    used = {record.id: (7, datetime.now(UTC))}
    conn = await asyncpg.connect(proxy.url_for(database), command_timeout=0.5)
    attempt: WriteAttempt[None] = WriteAttempt()
    proxy.switch_on(b"COMMIT", "mute")
    with pytest.raises(StoreError):
        await record_usage(conn, used, attempt)
    conn.terminate()
    proxy.set_mode("pass")
    retry = await asyncpg.connect(proxy.url_for(database))
    try:
        await record_usage(retry, used, attempt)
    finally:
        await retry.close()
    count = await direct.fetchval(
        "SELECT request_count FROM module_api_keys WHERE id = $1", uuid.UUID(record.id)
    )
    assert count == 7


async def test_transaction_cut_off_before_commit_is_ended_by_the_retry(
    proxy: FaultProxy, direct: asyncpg.Connection, database: str
) -> None:
    record, _ = await create_key(
        direct, module_id=MODULE, site_id=SITE, agency_id=SITE, name="u", scopes=[]
    )
    key_id = uuid.UUID(record.id)
    conn = await asyncpg.connect(proxy.url_for(database), command_timeout=0.5)
    attempt: WriteAttempt[None] = WriteAttempt()

    async def update_then_partition(c: asyncpg.Connection) -> None:
        await c.execute(
            "UPDATE module_api_keys SET request_count = request_count + 1 WHERE id = $1", key_id
        )  # the key row is locked now
        proxy.set_mode("blackhole")  # a silent partition, before COMMIT was sent
        await c.execute("SELECT 1")  # held back: times out, and the connection is closed

    with pytest.raises(TimeoutError):
        await write_once(conn, attempt, update_then_partition)
    # The proxy stays cut off: the server never learns that the client closed (as after a real
    # partition), so the backend lives on, idle in transaction, holding the row lock.
    orphans = "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()"  # noqa: E501
    assert await direct.fetchval(orphans) == 1

    # The network is back for new connections. Without ending the orphan, the retry's UPDATE
    # would wait on its lock until IDLE_IN_TRANSACTION_MS; it must be done well before.
    assert IDLE_IN_TRANSACTION_MS > 5_000
    retry = await asyncpg.connect(database, command_timeout=5)
    try:
        await record_usage(retry, {record.id: (7, datetime.now(UTC))}, attempt)
    finally:
        await retry.close()
    assert attempt.orphan is None
    count = await direct.fetchval("SELECT request_count FROM module_api_keys WHERE id = $1", key_id)
    assert count == 7  # the orphan's +1 was never committed
    assert await direct.fetchval(orphans) == 0


async def test_only_the_orphaned_transaction_itself_is_ever_terminated(
    direct: asyncpg.Connection, database: str
) -> None:
    # The orphan's pid now belongs to another session: one in another transaction, then one in
    # none. Neither may be touched.
    other = await asyncpg.connect(database)
    try:
        await other.execute("BEGIN")
        xid, pid = await other.fetchrow("SELECT txid_current(), pg_backend_pid()")
        for orphan in ((pid, xid - 1), (pid, xid + 1)):
            attempt: WriteAttempt[int] = WriteAttempt()
            attempt.orphan = orphan
            assert await write_logs(direct, rows(1), attempt) == 1
            assert attempt.orphan is None
        await other.execute("COMMIT")
        attempt.orphan = (pid, xid)  # its own transaction, over: the session is in none
        assert await write_logs(direct, rows(1), attempt) == 1
        assert await other.fetchval("SELECT 1") == 1  # alive
    finally:
        await other.close()
    assert await log_count(direct) == 3
