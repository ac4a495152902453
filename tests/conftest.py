"""Shared fixtures: real Postgres and Redis, never mocks.

Strategy: one migrated template database per test session; each test that needs Postgres gets
a fresh database cloned from it (CREATE DATABASE ... TEMPLATE is a file copy, ~50 ms), so tests
are isolated and may run gateways that LISTEN without seeing each other's notifications.

Where the servers are: TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/
postgres) and TEST_REDIS_URL (default redis://127.0.0.1:6379/15). When one is missing
the tests that need it fail with a message saying so; they never skip (CI sets CI=true and
relies on that).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from tests.support.edge import StartUpstream
from tests.support.raw_upstream import RawUpstream, Reply

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _require_postgres() -> None:
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"Postgres is required for this test and is not reachable at {PG_URL} ({exc}). "
            "Start it (see docs/development.md) or set TEST_DATABASE_URL.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a database with modgate's schema applied, cloned by `database`."""
    _require_postgres()
    from proxy.store.migrate import migrate

    name = f"modgate_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    asyncio.run(migrate(_with_database(PG_URL, name)))
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database(pg_template: str) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database of this test's own."""
    name = f"modgate_t_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _with_database(PG_URL, name)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def blank_database() -> AsyncIterator[str]:
    """DSN of a fresh, empty database (no modgate schema)."""
    await asyncio.to_thread(_require_postgres)
    name = f"modgate_b_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    yield _with_database(PG_URL, name)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def upstream(aiohttp_server: Any) -> tuple[str, Any]:
    """A running test upstream (tests/support/upstream.py): its base URL and what it saw."""
    from tests.support.upstream import UpstreamLog, build_upstream

    log = UpstreamLog()
    server = await aiohttp_server(build_upstream(log))
    return f"http://127.0.0.1:{server.port}", log


@pytest.fixture
async def raw_upstreams() -> AsyncIterator[StartUpstream]:
    """`await raw_upstreams(*scripts, repeat=...)`: a RawUpstream, closed after the test."""
    started: list[RawUpstream] = []

    async def start(*scripts: list[Reply | bytes], repeat: Reply | bytes | None = None) -> Any:
        upstream = await RawUpstream.start(*scripts, repeat=repeat)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        await upstream.close()
