"""A property test: random creates, updates, deletes, reads and cursor-followed lists from two
sites, compared with an in-memory model after every step. No row of one site is ever visible
to, or changed by, the other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import GatewayError
from proxy.executor.entities import run_entity_call
from tests.conftest import PG_URL
from tests.executor.entities.products import SCHEMA_SQL, SITE_A, SITE_B, TABLE, payload
from tests.support import run_prefix

SITES = st.sampled_from([SITE_A, SITE_B])
STOCK = st.one_of(st.none(), st.integers(0, 3))  # few values: many ties
PICK = st.integers(0, 50)  # which existing row (of either site), or an unknown id
STEP = st.one_of(
    st.tuples(st.just("create"), SITES, STOCK),
    st.tuples(st.just("update"), SITES, PICK, STOCK),
    st.tuples(st.just("delete"), SITES, PICK),
    st.tuples(st.just("read"), SITES, PICK),
    st.tuples(st.just("list"), SITES, st.integers(1, 4), st.sampled_from(["asc", "desc"])),
)


@pytest.fixture(scope="module")
def dsn(pg_template: str) -> Iterator[str]:
    name = run_prefix.database_name("model")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"{PG_URL.rpartition('/')[0]}/{name}"

    async def schema() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(SCHEMA_SQL)
        finally:
            await conn.close()

    asyncio.run(schema())
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def call(pool: Any, operation: str, **kwargs: Any) -> tuple[int, Any]:
    try:
        answer = await run_entity_call(pool, payload(operation, **kwargs), timeout=5)
    except GatewayError as err:
        return err.status, None
    return answer.status, orjson.loads(answer.body)


def expected_order(rows: dict[str, int | None], order: str) -> list[str]:
    """Postgres's order: NULL as the largest stock, ties by id (uuid order = its hex text's)."""
    key = [(stock is None, stock or 0, row_id) for row_id, stock in rows.items()]
    ordered = sorted(key, reverse=order == "desc")
    return [row_id for _, _, row_id in ordered]


async def run_steps(url: str, steps: list[tuple[Any, ...]]) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        await pool.execute(f"TRUNCATE {TABLE}")
        model: dict[str, dict[str, int | None]] = {SITE_A: {}, SITE_B: {}}
        known: list[str] = []  # ids of every row made, of both sites, deleted ones too
        for step in steps:
            op, site = step[0], step[1]
            mine = model[site]
            if op == "create":
                status, body = await call(
                    pool, "create", site=site, body={"name": "n", "stock": step[2]}
                )
                assert status == 201 and body["data"]["stock"] == step[2]
                mine[body["data"]["id"]] = step[2]
                known.append(body["data"]["id"])
                continue
            if op == "list":
                pairs = [("sort", "stock"), ("order", step[3]), ("limit", str(step[2]))]
                ids: list[str] = []
                while True:
                    status, body = await call(pool, "list", site=site, query=pairs)
                    assert status == 200 and body["pagination"]["total"] == len(mine)
                    ids += [row["id"] for row in body["data"]]
                    if body["pagination"]["next_cursor"] is None:
                        break
                    pairs = [*pairs[:3], ("cursor", body["pagination"]["next_cursor"])]
                assert ids == expected_order(mine, step[3])
                continue
            row_id = known[step[2]] if step[2] < len(known) else str(uuid.uuid4())
            if op == "update":
                status, body = await call(
                    pool, "update", site=site, row_id=row_id, body={"stock": step[3]}
                )
                if row_id in mine:
                    assert status == 200 and body["data"]["stock"] == step[3]
                    mine[row_id] = step[3]
                else:
                    assert status == 404
            elif op == "delete":
                status, _ = await call(pool, "delete", site=site, row_id=row_id)
                assert status == (200 if mine.pop(row_id, "gone") != "gone" else 404)
            else:
                status, body = await call(pool, "read", site=site, row_id=row_id)
                if row_id in mine:
                    assert status == 200 and body["data"]["stock"] == mine[row_id]
                else:
                    assert status == 404
        stored = await pool.fetch(f"SELECT id::text, site_id::text, stock FROM {TABLE}")
        assert {r["id"]: (r["site_id"], r["stock"]) for r in stored} == {
            row_id: (site, stock) for site, rows in model.items() for row_id, stock in rows.items()
        }
    finally:
        await pool.close()


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(STEP, min_size=1, max_size=40))
def test_two_sites_match_the_model(dsn: str, steps: list[tuple[Any, ...]]) -> None:
    asyncio.run(run_steps(dsn, steps))
