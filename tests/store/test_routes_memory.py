"""The bytes a worker keeps per route loaded from Postgres and compiled (a tracemalloc budget).

Routes come through `load_modules` from a real Postgres, so every value is a fresh string as
asyncpg decodes it: built from Python literals instead, routes share their strings and the
budget would not see what a worker holds (bench/memory_bench.py measures the same at 100k).
"""

from __future__ import annotations

import asyncio

import asyncpg

from proxy.routing.manifest import Manifest
from proxy.routing.model import ModuleSpec, RouteSpec
from proxy.routing.table import ModuleTable, compile_module
from proxy.store.routes import apply_manifest, load_modules
from tests.support.memory import retained_bytes

MODULE_ID = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d01"
METHODS = ("GET", "POST", "PUT", "DELETE")
SCHEMA = {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}}

# Measured 765 on CPython 3.11. The documentation held per route (summary, description and
# parsed schemas) would add ~1400; method, handler type and scopes copied per route ~320.
ROUTE_BYTES_BUDGET = 850


def _documented_routes(count: int) -> tuple[RouteSpec, ...]:
    return tuple(
        RouteSpec(
            path=f"/r{r}/:id/sub{r % 7}",
            method=METHODS[r % 4],
            handler_type="proxy",
            required_scopes=("crm:read",) if r % 4 == 0 else ("crm:write", "crm:read"),
            summary=f"Record {r}",
            description="Reads or changes one record of this kind.",
            request_schema=None if r % 4 == 0 else SCHEMA,
            response_schema=SCHEMA,
        )
        for r in range(count)
    )


async def _apply(database: str, module: ModuleSpec) -> None:
    conn = await asyncpg.connect(database)
    try:
        await apply_manifest(conn, Manifest(modules=(module,)))
    finally:
        await conn.close()


async def _load(database: str) -> list[ModuleSpec]:
    conn = await asyncpg.connect(database)
    try:
        return await load_modules(conn)
    finally:
        await conn.close()


def test_loaded_routes_keep_a_bounded_number_of_bytes_each(database: str) -> None:
    module = ModuleSpec(id=MODULE_ID, upstream="http://crm:8000", routes=_documented_routes(1000))
    asyncio.run(_apply(database, module))
    asyncio.run(_load(database))  # first use: asyncpg's and the loader's caches, not counted

    def load_and_compile() -> ModuleTable:
        [loaded] = asyncio.run(_load(database))
        return compile_module(loaded, 1)

    table, size = retained_bytes(load_and_compile)
    assert len(table) == 1000
    assert size / len(table) < ROUTE_BYTES_BUDGET
    assert table.match("/r998/7/sub4", "PUT").payload.spec.required_scopes == (
        "crm:write",
        "crm:read",
    )
