"""Shared fixtures: real Postgres and Redis, never mocks.

Strategy: one migrated template database per test process (each xdist worker has its own, so
no clone waits for another worker's to finish); each test that needs Postgres gets a fresh
database cloned from it (CREATE DATABASE ... TEMPLATE is a file copy, ~50 ms), so tests are
isolated and may run gateways that LISTEN without seeing each other's notifications.

The servers are shared with other programs and other runs: every database and Redis key a run
creates carries the run's prefix (tests/support/run_prefix.py), the fixtures drop what they
made, and at the end of the session the controller sweeps whatever of this run is left. Nothing
on the shared servers is flushed or reconfigured.

Where the servers are: TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/
postgres) and TEST_REDIS_URL (default redis://127.0.0.1:6379/15). When one is missing
the tests that need it fail with a message saying so; they never skip (CI sets CI=true and
relies on that).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from tests.support import run_prefix
from tests.support.edge import FUZZ_STATS, StartUpstream
from tests.support.raw_upstream import RawUpstream, Reply

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_SWEPT = pytest.StashKey[tuple[list[str], int]]()  # what the end-of-run sweep found


def pytest_configure(config: pytest.Config) -> None:
    # A worker takes its controller's run id (pytest_configure_node); the controller draws it.
    worker_input = getattr(config, "workerinput", None)
    run_prefix.begin(worker_input["modgate_run"] if worker_input is not None else None)
    if worker_input is None and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        # A run that is killed (a CI timeout, `kill`) ends as an interrupted one, so
        # pytest_sessionfinish still sweeps what it created.
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, in the controller: hand each worker this run's id."""
    node.workerinput["modgate_run"] = run_prefix.run_id()


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        # The fuzz counts travel to the controller, which prints them (pytest_terminal_summary).
        config.workeroutput["fuzz_stats"] = dict(FUZZ_STATS)
        return
    # Once, after every worker: what a test killed in its teardown left of this run.
    dropped, deleted = asyncio.run(run_prefix.sweep(PG_URL, REDIS_URL))
    config.stash[_SWEPT] = (dropped, deleted)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    FUZZ_STATS.update(getattr(node, "workeroutput", {}).get("fuzz_stats", {}))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if FUZZ_STATS:
        terminalreporter.section("edge fuzz (hypothesis, derandomized)")
        for key, count in sorted(FUZZ_STATS.items()):
            terminalreporter.write_line(f"{key}: {count}")
    if _SWEPT in config.stash:
        dropped, deleted = config.stash[_SWEPT]
        run = run_prefix.run_id()
        terminalreporter.write_line(
            f"shared servers, run {run}: databases {run_prefix.DATABASE_PREFIX}{run}_* "
            f"({len(dropped)} left by tests, dropped now), Redis keys mg:{{{run}-* "
            f"({deleted} deleted now)"
        )


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

    name = run_prefix.database_name(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_tpl")
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    asyncio.run(migrate(_with_database(PG_URL, name)))
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database(pg_template: str) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database of this test's own."""
    name = run_prefix.database_name("t")
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _with_database(PG_URL, name)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def blank_database() -> AsyncIterator[str]:
    """DSN of a fresh, empty database (no modgate schema)."""
    await asyncio.to_thread(_require_postgres)
    name = run_prefix.database_name("b")
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
