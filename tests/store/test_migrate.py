"""Migrations and the schema they create, NOTIFY triggers included, on a real Postgres."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from proxy.errors import StoreError
from proxy.store.migrate import Migration, apply_migrations, dsn_location, migrate

CHANNEL = "modgate_invalidate"
MARK = "test:mark"
WAIT = 5.0

# The seed's Task 1 SQL as the platform ran it, minus the foreign keys to platform tables
# (sites, agencies, auth.users) and minus idx_api_logs_cleanup, which Postgres rejects.
SEED_SQL = """
CREATE TABLE IF NOT EXISTS module_api_keys (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  module_id UUID NOT NULL,
  site_id UUID NOT NULL,
  agency_id UUID NOT NULL,
  key_prefix TEXT NOT NULL,
  key_hash TEXT NOT NULL,
  name TEXT NOT NULL,
  scopes TEXT[] DEFAULT '{}',
  rate_limit_per_minute INTEGER DEFAULT 60,
  rate_limit_per_day INTEGER DEFAULT 10000,
  allowed_ips TEXT[] DEFAULT '{}',
  allowed_origins TEXT[] DEFAULT '{}',
  is_active BOOLEAN DEFAULT true,
  expires_at TIMESTAMPTZ,
  last_used_at TIMESTAMPTZ,
  request_count INTEGER DEFAULT 0,
  created_by UUID,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  revoked_at TIMESTAMPTZ,
  revoked_by UUID
);
CREATE INDEX idx_api_keys_hash ON module_api_keys(key_hash) WHERE is_active = true;
CREATE INDEX idx_api_keys_prefix ON module_api_keys(key_prefix);
CREATE INDEX idx_api_keys_module_site ON module_api_keys(module_id, site_id);
CREATE TABLE IF NOT EXISTS module_api_routes (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  module_id UUID NOT NULL,
  path TEXT NOT NULL,
  method TEXT NOT NULL CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
  handler_type TEXT NOT NULL DEFAULT 'function'
    CHECK (handler_type IN ('function', 'proxy', 'static')),
  handler_code TEXT,
  handler_url TEXT,
  requires_auth BOOLEAN DEFAULT true,
  required_scopes TEXT[] DEFAULT '{}',
  rate_limit_per_minute INTEGER,
  cache_ttl_seconds INTEGER DEFAULT 0,
  summary TEXT,
  description TEXT,
  request_schema JSONB,
  response_schema JSONB,
  is_active BOOLEAN DEFAULT true,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW(),
  UNIQUE(module_id, path, method)
);
CREATE INDEX idx_api_routes_module ON module_api_routes(module_id) WHERE is_active = true;
CREATE INDEX idx_api_routes_path ON module_api_routes(module_id, path, method);
CREATE TABLE IF NOT EXISTS module_api_logs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  module_id UUID NOT NULL,
  site_id UUID,
  route_id UUID REFERENCES module_api_routes(id),
  method TEXT NOT NULL,
  path TEXT NOT NULL,
  query_params JSONB,
  auth_type TEXT,
  api_key_id UUID REFERENCES module_api_keys(id),
  user_id UUID,
  status_code INTEGER,
  response_time_ms INTEGER,
  error_message TEXT,
  ip_address TEXT,
  user_agent TEXT,
  created_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX idx_api_logs_module ON module_api_logs(module_id, created_at DESC);
CREATE INDEX idx_api_logs_date ON module_api_logs(created_at DESC);
CREATE TABLE IF NOT EXISTS module_rate_limits (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  rate_limit_key TEXT NOT NULL,
  request_count INTEGER DEFAULT 0,
  window_start TIMESTAMPTZ DEFAULT NOW(),
  window_minutes INTEGER DEFAULT 1,
  UNIQUE(rate_limit_key, window_minutes)
);
CREATE INDEX idx_rate_limits_key ON module_rate_limits(rate_limit_key);
"""

SEED_CLEANUP_INDEX = """
CREATE INDEX idx_api_logs_cleanup ON module_api_logs(created_at)
  WHERE created_at < NOW() - INTERVAL '30 days'
"""

INSERT_ROUTE = """
INSERT INTO module_api_routes (module_id, path, method, handler_type, handler_code)
VALUES ($1, $2, $3, 'static', '{}') RETURNING id
"""
INSERT_KEY = """
INSERT INTO module_api_keys (module_id, site_id, agency_id, key_prefix, key_hash, name)
VALUES ($1, gen_random_uuid(), gen_random_uuid(), 'dmc_live_abc', $2, 'test key') RETURNING id
"""


def new_id() -> str:
    return str(uuid.uuid4())


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows}


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


class Listener:
    """LISTENs on its own connection; `received()` returns what arrived up to now, in order."""

    def __init__(self, writer: asyncpg.Connection) -> None:
        self.writer = writer
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.queue.put_nowait(payload)

    async def received(self) -> list[str]:
        # Delivery follows commit order, so a marker sent after the writer's last commit
        # arrives after everything it caused: no sleeping, and "nothing else" is provable.
        await self.writer.execute("SELECT pg_notify($1, $2)", CHANNEL, MARK)
        got: list[str] = []
        while (payload := await asyncio.wait_for(self.queue.get(), WAIT)) != MARK:
            got.append(payload)
        return got


@pytest.fixture
async def listener(database: str, conn: asyncpg.Connection) -> AsyncIterator[Listener]:
    listening = await asyncpg.connect(database)
    result = Listener(conn)
    await listening.add_listener(CHANNEL, result.on_notify)
    yield result
    await listening.close()


# -- migrate --------------------------------------------------------------------------------


ALL_MIGRATIONS = [
    "0001_initial",
    "0002_forward_credentials",
    "0003_encoded_slashes",
    "0004_entities",
    "0005_api_consumers",
    "0006_consumer_secrets",
]


async def test_blank_database_gets_every_migration_once(blank_database: str) -> None:
    assert await migrate(blank_database) == ALL_MIGRATIONS
    assert await migrate(blank_database) == []
    conn = await asyncpg.connect(blank_database)
    try:
        rows = await conn.fetch("SELECT version, name FROM modgate_schema_migrations ORDER BY 1")
        assert [tuple(r) for r in rows] == [
            (1, "0001_initial"),
            (2, "0002_forward_credentials"),
            (3, "0003_encoded_slashes"),
            (4, "0004_entities"),
            (5, "0005_api_consumers"),
            (6, "0006_consumer_secrets"),
        ]
        assert {
            "module_api_keys",
            "module_api_routes",
            "module_api_logs",
            "modgate_modules",
            "module_entities",
            "module_api_consumers",
            "modgate_schema_migrations",
        } == await tables(conn)
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(blank_database: str) -> None:
    results = await asyncio.gather(*(migrate(blank_database) for _ in range(4)))
    # Each file is applied exactly once, whichever caller got there first.
    assert sorted(name for applied in results for name in applied) == ALL_MIGRATIONS
    conn = await asyncpg.connect(blank_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM modgate_schema_migrations") == len(
            ALL_MIGRATIONS
        )
    finally:
        await conn.close()


async def test_migrated_database_is_up_to_date(database: str) -> None:
    assert await migrate(database) == []


async def test_database_with_the_seeds_tables(blank_database: str) -> None:
    conn = await asyncpg.connect(blank_database)
    try:
        await conn.execute(SEED_SQL)
        module_id = new_id()
        route_id = await conn.fetchval(INSERT_ROUTE, module_id, "/contacts", "GET")
        assert await migrate(blank_database) == ALL_MIGRATIONS
        # Existing rows survive, existing tables gain the triggers, modgate's table is added.
        assert await conn.fetchval("SELECT module_id::text FROM module_api_routes") == module_id
        assert "modgate_modules" in await tables(conn)
        listening = await asyncpg.connect(blank_database)
        try:
            listener = Listener(conn)
            await listening.add_listener(CHANNEL, listener.on_notify)
            await conn.execute("UPDATE module_api_routes SET summary = 'x' WHERE id = $1", route_id)
            assert await listener.received() == [f"routes:{module_id}"]
        finally:
            await listening.close()
    finally:
        await conn.close()


async def test_seed_cleanup_index_is_rejected_by_postgres(conn: asyncpg.Connection) -> None:
    # Why 0001 leaves idx_api_logs_cleanup out.
    with pytest.raises(asyncpg.InvalidObjectDefinitionError, match="IMMUTABLE"):
        await conn.execute(SEED_CLEANUP_INDEX)


async def test_failed_migration_leaves_nothing_behind(blank_database: str) -> None:
    conn = await asyncpg.connect(blank_database)
    try:
        good = Migration(1, "0001_good", "CREATE TABLE good (id int)")
        bad = Migration(
            2, "0002_bad", "CREATE TABLE half (id int); SELECT no_such_column FROM good"
        )
        with pytest.raises(StoreError) as caught:
            await apply_migrations(conn, [good, bad])
        assert str(caught.value).startswith("migration failed while applying 0002_bad: ")
        assert "no_such_column" in str(caught.value)
        assert await tables(conn) == {"good", "modgate_schema_migrations"}
        assert await conn.fetchval("SELECT max(version) FROM modgate_schema_migrations") == 1
        fixed = Migration(2, "0002_fixed", "CREATE TABLE half (id int)")
        assert await apply_migrations(conn, [good, fixed]) == ["0002_fixed"]
    finally:
        await conn.close()


# -- connection errors ----------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_server_is_a_store_error_without_password() -> None:
    port = closed_port()
    with pytest.raises(StoreError) as caught:
        await migrate(f"postgresql://modgate:s3cret@127.0.0.1:{port}/gateway", timeout=2)
    message = str(caught.value)
    assert message.startswith(f"cannot connect to Postgres at 127.0.0.1:{port}/gateway: ")
    assert "s3cret" not in message
    assert caught.value.__cause__ is None


async def test_missing_database_is_a_store_error(database: str) -> None:
    parts = urlsplit(database)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or 'postgres'}:s3cret@{host}"
    dsn = urlunsplit((parts.scheme, netloc, "/nope_db", parts.query, ""))
    with pytest.raises(StoreError) as caught:
        await migrate(dsn, timeout=2)
    message = str(caught.value)
    assert message.startswith("cannot connect to Postgres at ")
    assert message.endswith('/nope_db: database "nope_db" does not exist')
    assert "s3cret" not in message


async def test_malformed_dsn_is_a_store_error() -> None:
    with pytest.raises(StoreError, match=r"^cannot connect to Postgres at <malformed DSN>: "):
        await migrate("postgresql://u:pw@localhost:notaport/db", timeout=1)


@pytest.mark.parametrize(
    ("dsn", "location"),
    [
        ("postgresql://u:pw@db.example:6543/gateway", "db.example:6543/gateway"),
        ("postgres://u@10.0.0.5/modgate?sslmode=require", "10.0.0.5:5432/modgate"),
        ("postgresql://u:pw@[::1]:5433/x", "::1:5433/x"),
        ("postgresql:///gw?host=/run/postgresql&port=5433", "/run/postgresql:5433/gw"),
        ("postgresql://alice@pg/", "pg:5432/alice"),
    ],
)
def test_dsn_location_never_shows_credentials(
    dsn: str, location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(var, raising=False)
    assert dsn_location(dsn) == location


# -- schema ---------------------------------------------------------------------------------


async def test_schema_leaves_out_what_modgate_does_not_own(conn: asyncpg.Connection) -> None:
    assert "module_rate_limits" not in await tables(conn)
    indexes = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
    assert "idx_api_logs_cleanup" not in indexes
    assert {
        "idx_api_keys_hash",
        "idx_api_keys_prefix",
        "idx_api_keys_module_site",
        "idx_api_routes_module",
        "idx_api_routes_path",
        "idx_api_logs_module",
        "idx_api_logs_date",
    } <= indexes


async def test_seed_checks_and_unique_are_kept(conn: asyncpg.Connection) -> None:
    module_id = new_id()
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(INSERT_ROUTE, module_id, "/x", "TRACE")
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO module_api_routes (module_id, path, method, handler_type) "
            "VALUES ($1, '/x', 'GET', 'lambda')",
            module_id,
        )
    await conn.execute(INSERT_ROUTE, module_id, "/x", "GET")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(INSERT_ROUTE, module_id, "/x", "GET")


async def test_deleting_a_route_or_key_keeps_its_logs(conn: asyncpg.Connection) -> None:
    module_id = new_id()
    route_id = await conn.fetchval(INSERT_ROUTE, module_id, "/x", "GET")
    key_id = await conn.fetchval(INSERT_KEY, module_id, "h" * 64)
    await conn.execute(
        "INSERT INTO module_api_logs (module_id, route_id, api_key_id, method, path) "
        "VALUES ($1, $2, $3, 'GET', '/x')",
        module_id,
        route_id,
        key_id,
    )
    await conn.execute("DELETE FROM module_api_routes WHERE id = $1", route_id)
    await conn.execute("DELETE FROM module_api_keys WHERE id = $1", key_id)
    row = await conn.fetchrow("SELECT route_id, api_key_id FROM module_api_logs")
    assert tuple(row) == (None, None)


# -- NOTIFY triggers ------------------------------------------------------------------------


async def test_route_changes_notify_their_module(
    conn: asyncpg.Connection, listener: Listener
) -> None:
    a, b = new_id(), new_id()
    route_id = await conn.fetchval(INSERT_ROUTE, a, "/contacts", "GET")
    assert await listener.received() == [f"routes:{a}"]
    await conn.execute("UPDATE module_api_routes SET is_active = false WHERE id = $1", route_id)
    assert await listener.received() == [f"routes:{a}"]
    await conn.execute("UPDATE module_api_routes SET module_id = $2 WHERE id = $1", route_id, b)
    assert await listener.received() == [f"routes:{a}", f"routes:{b}"]
    await conn.execute("DELETE FROM module_api_routes WHERE id = $1", route_id)
    assert await listener.received() == [f"routes:{b}"]


async def test_bulk_change_of_one_module_sends_one_notification(
    conn: asyncpg.Connection, listener: Listener
) -> None:
    module_id, other = new_id(), new_id()
    async with conn.transaction():
        for i in range(50):
            await conn.execute(INSERT_ROUTE, module_id, f"/r{i}", "GET")
        await conn.execute("UPDATE module_api_routes SET summary = 'bulk'")
    assert await listener.received() == [f"routes:{module_id}"]
    async with conn.transaction():
        await conn.execute(INSERT_ROUTE, other, "/x", "GET")
        await conn.execute("DELETE FROM module_api_routes WHERE module_id = $1", module_id)
    assert await listener.received() == [f"routes:{other}", f"routes:{module_id}"]


async def test_rolled_back_changes_notify_nothing(
    conn: asyncpg.Connection, listener: Listener
) -> None:
    tx = conn.transaction()
    await tx.start()
    await conn.execute(INSERT_ROUTE, new_id(), "/x", "GET")
    await tx.rollback()
    assert await listener.received() == []


async def test_module_row_changes_notify_routes(
    conn: asyncpg.Connection, listener: Listener
) -> None:
    a, b = new_id(), new_id()
    await conn.execute("INSERT INTO modgate_modules (id, name) VALUES ($1, 'crm')", a)
    assert await listener.received() == [f"routes:{a}"]
    await conn.execute("UPDATE modgate_modules SET upstream = 'http://crm:8000'")
    assert await listener.received() == [f"routes:{a}"]
    await conn.execute("UPDATE modgate_modules SET id = $1", b)
    assert await listener.received() == [f"routes:{a}", f"routes:{b}"]
    await conn.execute("DELETE FROM modgate_modules")
    assert await listener.received() == [f"routes:{b}"]


async def test_key_changes_notify_their_hash(conn: asyncpg.Connection, listener: Listener) -> None:
    old_hash, new_hash = "a" * 64, "b" * 64
    key_id = await conn.fetchval(INSERT_KEY, new_id(), old_hash)
    assert await listener.received() == [f"key:{old_hash}"]
    await conn.execute(
        "UPDATE module_api_keys SET is_active = false, revoked_at = NOW() WHERE id = $1", key_id
    )
    assert await listener.received() == [f"key:{old_hash}"]
    await conn.execute("UPDATE module_api_keys SET key_hash = $2 WHERE id = $1", key_id, new_hash)
    assert await listener.received() == [f"key:{old_hash}", f"key:{new_hash}"]
    await conn.execute("DELETE FROM module_api_keys WHERE id = $1", key_id)
    assert await listener.received() == [f"key:{new_hash}"]


async def test_usage_bookkeeping_does_not_invalidate_keys(
    conn: asyncpg.Connection, listener: Listener
) -> None:
    key_hash = "c" * 64
    key_id = await conn.fetchval(INSERT_KEY, new_id(), key_hash)
    assert await listener.received() == [f"key:{key_hash}"]
    await conn.execute(
        "UPDATE module_api_keys SET last_used_at = NOW(), request_count = request_count + 7 "
        "WHERE id = $1",
        key_id,
    )
    assert await listener.received() == []
    await conn.execute(
        "UPDATE module_api_keys SET request_count = request_count + 1, scopes = '{read:x}' "
        "WHERE id = $1",
        key_id,
    )
    assert await listener.received() == [f"key:{key_hash}"]


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE module_api_routes, module_api_logs",
        "TRUNCATE module_api_keys CASCADE",
        # CASCADE: module_entities refers to modgate_modules (0004).
        "TRUNCATE modgate_modules CASCADE",
        "TRUNCATE module_entities",
        "TRUNCATE module_api_consumers CASCADE",  # module_api_logs refers to it (0005)
        "TRUNCATE module_api_routes, module_api_keys, modgate_modules, module_entities, "
        "module_api_consumers, module_api_logs",
    ],
)
async def test_truncate_notifies_all(
    conn: asyncpg.Connection, listener: Listener, statement: str
) -> None:
    await conn.execute(INSERT_ROUTE, new_id(), "/x", "GET")
    await conn.execute(INSERT_KEY, new_id(), "d" * 64)
    await listener.received()
    await conn.execute(statement)
    assert await listener.received() == ["all"]
