"""A command's work on one Postgres connection, opened and closed around it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def run_on_connection(dsn: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """`work(conn)`'s result; a connection failure is a StoreError naming host:port/db."""
    from proxy.store.migrate import connect  # asyncpg: loaded by the commands that need it

    async def run() -> T:
        conn = await connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())
