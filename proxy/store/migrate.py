"""Schema migrations: numbered SQL files, each applied once, in order, by whichever replica
gets there first.

Strategy: `migrations/NNNN_name.sql` files are applied in version order, each in its own
transaction together with its row in `modgate_schema_migrations`, so a failed file leaves
nothing behind and is retried whole next time. Every transaction first takes one fixed
transaction-level advisory lock, then re-reads what is applied: two replicas starting at once
serialize on the lock, and the second finds the work done (READ COMMITTED gives each statement
a fresh snapshot, so it sees the first one's commit). The files themselves are idempotent too,
because the platform's database may already hold the seed's tables.

Errors from asyncpg and the socket layer are translated into `StoreError`; messages name the
server as host:port/database and never carry the DSN's password.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from proxy.errors import StoreError

DEFAULT_CONNECT_TIMEOUT = 10.0

# Any fixed bigint works, as long as nothing else in the database uses it: b"modgate" in hex.
MIGRATION_LOCK_ID = 0x6D6F6467617465

MIGRATIONS_TABLE = "modgate_schema_migrations"

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_LOCK = "SELECT pg_advisory_xact_lock($1)"
_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
)
"""
_APPLIED = f"SELECT version FROM {MIGRATIONS_TABLE}"
_IS_APPLIED = f"SELECT EXISTS (SELECT 1 FROM {MIGRATIONS_TABLE} WHERE version = $1)"
_RECORD = f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)"

# What a broken connection or an unreachable server raises through asyncpg.
CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name without ".sql", e.g. "0001_initial"
    sql: str


def load_migrations() -> list[Migration]:
    """The packaged migration files, in version order."""
    folder = resources.files(__package__ or "proxy.store").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            # A packaging mistake, not an operator's: fail loudly before touching the database.
            raise RuntimeError(f"two migrations with version {version}: {entry.name}")
        name = entry.name.removesuffix(".sql")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(dsn: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> list[str]:
    """Apply the pending migrations; returns their names ([] when the schema is up to date).

    `timeout` bounds connecting; waiting for another replica's migration is not bounded.
    """
    conn = await connect(dsn, timeout=timeout)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


async def apply_migrations(conn: Any, migrations: list[Migration] | None = None) -> list[str]:
    """Apply `migrations` (default: the packaged ones) not yet recorded, on an open connection."""
    pending = load_migrations() if migrations is None else migrations
    applied: list[str] = []
    step = "preparing the migrations table"
    try:
        async with conn.transaction():
            # Locked before CREATE TABLE IF NOT EXISTS, which itself races between sessions.
            await conn.execute(_LOCK, MIGRATION_LOCK_ID)
            await conn.execute(_CREATE_TABLE)
            done = {row[0] for row in await conn.fetch(_APPLIED)}
        for migration in pending:
            if migration.version in done:
                continue
            step = f"applying {migration.name}"
            async with conn.transaction():
                await conn.execute(_LOCK, MIGRATION_LOCK_ID)
                if await conn.fetchval(_IS_APPLIED, migration.version):
                    continue  # another replica applied it while we waited for the lock
                await conn.execute(migration.sql)  # no arguments: simple protocol, many statements
                await conn.execute(_RECORD, migration.version, migration.name)
            applied.append(migration.name)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"migration failed while {step}: {exc}") from exc
    except CONNECTION_ERRORS as exc:
        raise StoreError(f"lost the connection to Postgres while {step}: {_reason(exc)}") from exc
    return applied


async def connect(dsn: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Any:
    """Open one asyncpg connection; every failure becomes a StoreError naming host:port/db."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout)
    except (*CONNECTION_ERRORS, ValueError, asyncpg.PostgresError) as exc:
        reason = _reason(exc, timeout=timeout)
        password = _password(dsn)
        if password:
            reason = reason.replace(password, "***")
        where = dsn_location(dsn)
        # `from None`: the original exception may echo parts of the DSN into a traceback.
        raise StoreError(f"cannot connect to Postgres at {where}: {reason}") from None


def dsn_location(dsn: str) -> str:
    """`host:port/database` of a postgres:// DSN, for messages; never the user or password."""
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError:
        return "<malformed DSN>"
    query = parse_qs(parts.query)

    def pick(key: str, env: str, default: str) -> str:
        return query.get(key, [""])[0] or os.environ.get(env, "") or default

    host = parts.hostname or pick("host", "PGHOST", "localhost")
    user = unquote(parts.username or "") or pick("user", "PGUSER", "postgres")
    database = unquote(parts.path.lstrip("/")) or pick("dbname", "PGDATABASE", user)
    return f"{host}:{port or pick('port', 'PGPORT', '5432')}/{database}"


def _password(dsn: str) -> str | None:
    try:
        return unquote(urlsplit(dsn).password or "") or None
    except ValueError:
        return None


def _reason(exc: BaseException, *, timeout: float | None = None) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out" if timeout is None else f"timed out after {timeout:g} s"
    return str(exc) or type(exc).__name__
