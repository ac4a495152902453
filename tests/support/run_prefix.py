"""The names a test run gives what it creates on the shared Postgres and Redis, and the sweep
that removes it all at the end.

Strategy: each run draws 8 hex digits once (`begin()`, in the controller; xdist workers are
handed the controller's, so one run is one id however many workers it has). Everything the
run creates on a server it did not start carries them:
- databases are `modgate_test_<run>_<what>` (templates per worker, one clone per test);
- rate-limit keys are `mg:{<run>-...}`: the limiter's key is `mg:{<bucket>}:m|d` and a gateway's
  bucket starts with the module id, so the tests' module ids are UUIDs whose first group is the
  run (`module_id()`), and the buckets the tests name themselves start the same way (`bucket()`).
Two runs at once never share a name. The fixtures drop what they made; `sweep()` then runs once
at the end of the session, failed or interrupted, and drops whatever carries this run's prefix
and is left (a test killed in its teardown). Nothing else on the servers is read or changed:
no FLUSHDB, no SCRIPT FLUSH, no CONFIG SET; tests that need those start a private server.
"""

from __future__ import annotations

import secrets
import uuid

import asyncpg
import redis.asyncio as redis

DATABASE_PREFIX = "modgate_test_"

_run: str | None = None


def begin(run: str | None = None) -> str:
    """Set this process's run id: `run` (a worker's, from its controller), else a fresh one."""
    global _run
    _run = run or secrets.token_hex(4)
    return _run


def run_id() -> str:
    assert _run is not None, "run_prefix.begin() is called by tests/conftest.py at configure"
    return _run


def database_name(what: str) -> str:
    """`modgate_test_<run>_<what>_<8 hex>` (at most 63 bytes, Postgres' limit)."""
    name = f"{DATABASE_PREFIX}{run_id()}_{what}_{secrets.token_hex(4)}"
    assert len(name) <= 63, name
    return name


def module_id() -> str:
    """A fresh module UUID whose first group is the run, so its rate-limit keys carry it."""
    return str(uuid.UUID(run_id() + uuid.uuid4().hex[8:]))


def bucket(caller: str = "k:1") -> str:
    """A fresh rate-limit bucket of this run, shaped as the gateway's (`<module>:<caller>`)."""
    return f"{module_id()}:{caller}"


def redis_pattern() -> str:
    """SCAN pattern of every key this run's limiters wrote on the shared Redis."""
    return f"mg:{{{run_id()}-*"


def database_pattern() -> str:
    """LIKE pattern of every database this run created (`_` escaped: it matches any byte)."""
    return f"{DATABASE_PREFIX}{run_id()}_".replace("_", r"\_") + "%"


async def sweep(pg_url: str, redis_url: str) -> tuple[list[str], int]:
    """Drop this run's databases and delete its keys; what was left, for the summary.

    A server that cannot be reached is passed over: the tests that needed it have failed
    saying so already.
    """
    dropped: list[str] = []
    try:
        conn = await asyncpg.connect(pg_url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        pass
    else:
        try:
            names = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", database_pattern()
            )
            for row in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
                dropped.append(row["datname"])
        finally:
            await conn.close()
    deleted = 0
    client = redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=redis_pattern(), count=1000):
            deleted += await client.unlink(key)
    except (redis.RedisError, OSError):
        pass
    finally:
        await client.aclose()
    return dropped, deleted
