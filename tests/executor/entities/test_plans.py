"""Cursor pages are index range scans, however deep: `EXPLAIN (ANALYZE, FORMAT JSON)` of the
statement the pool sends for a page of 20 deep in a site of 50,000 rows, with the index the
docs recommend for a sortable field, `(site_id, price, id)`. Ascending and descending, the
cursor on a value and among the NULLs (NULLs sort last ascending, first descending), with the
plan Postgres makes for these values (custom) and the one a prepared statement ends up reusing
(generic). No node of the page may read more than a few pages' worth of rows: a plan test on
real Postgres, not a timing test. The total (`count(*)` of the site's matching rows, in the
same statement) reads the site by design and is left out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest

from proxy.executor.entities import cursor as cursors
from proxy.executor.entities import run_entity_call, sql
from proxy.executor.entities.query import ListQuery, parse_list_query
from tests.executor.entities.products import SCHEMA_SQL, SITE_A, SITE_B, TABLE, payload, schema

ROWS = 50_000  # of SITE_A; every tenth price NULL, each other price shared by ~45 rows
LIMIT = 20
BOUND = 3 * (LIMIT + 1)  # rows any node of the page may read (each range fetches LIMIT + 1)

# (order, rows before the cursor's in the list's order, whether the cursor's price is NULL)
CASES = [
    ("asc", 20_000, False),
    ("asc", 47_000, True),  # the NULLs are the last 5,000
    ("desc", 20_000, False),
    ("desc", 2_000, True),  # the NULLs are the first 5,000
]


async def _fill(conn: asyncpg.Connection) -> None:
    await conn.execute(SCHEMA_SQL)
    insert = f"""
        INSERT INTO {TABLE} (site_id, name, price, stock)
        SELECT $1::uuid, 'n' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 997 END, g % 7
        FROM generate_series(1, $2::int) AS g"""
    await conn.execute(insert, SITE_A, ROWS)
    await conn.execute(insert, SITE_B, ROWS // 10)
    await conn.execute(f"CREATE INDEX ON {TABLE} (site_id, price, id)")
    await conn.execute(f"ANALYZE {TABLE}")


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _page_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node but the total's: the top node aggregates the page, and the only aggregate
    below it (an InitPlan or SubPlan) is the count(*)."""
    root = plan["Plan"]
    assert root["Node Type"] == "Aggregate", root["Node Type"]
    total = [c for c in root["Plans"] if c["Node Type"] == "Aggregate"]
    assert len(total) == 1, [c["Node Type"] for c in root["Plans"]]
    kept = [root]
    for child in root["Plans"]:
        if child is not total[0]:
            kept += _nodes(child)
    return kept


def _read(node: dict[str, Any]) -> int:
    """Rows a node produced plus those it read and threw away."""
    dropped = sum(
        node.get(k, 0) for k in ("Rows Removed by Filter", "Rows Removed by Index Recheck")
    )
    return int(node["Actual Rows"] * node["Actual Loops"] + dropped)


def _literal(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    assert isinstance(value, str)
    return "'" + value.replace("'", "''") + "'"


async def _plans(conn: asyncpg.Connection, statement: sql.EntityStatement) -> list[Any]:
    """The custom plan (for these values) and the generic one (any values), both run."""
    custom = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.sql, *statement.args)
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute(f'PREPARE "#list" AS {statement.sql}')
    try:
        args = ", ".join(_literal(a) for a in statement.args)
        generic = await conn.fetchval(f'EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE "#list"({args})')
    finally:
        await conn.execute('DEALLOCATE "#list"')
        await conn.execute("RESET plan_cache_mode")
    return [orjson.loads(custom)[0], orjson.loads(generic)[0]]


def _query(order: str, key_json: str, page: int) -> tuple[list[tuple[str, str]], ListQuery]:
    pairs = [("sort", "price"), ("order", order), ("limit", str(LIMIT))]
    fingerprint = parse_list_query(pairs, schema()).fingerprint
    pairs.append(("cursor", cursors.encode(key_json, page, fingerprint)))
    return pairs, parse_list_query(pairs, schema())


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_deep_cursor_pages_are_index_range_scans(database: str, order: str) -> None:
    conn = await asyncpg.connect(database)
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        await _fill(conn)
        keys = f"price {order} NULLS {'LAST' if order == 'asc' else 'FIRST'}, id {order}"
        for case_order, before, null in CASES:
            if case_order != order:
                continue
            key_json, price = await conn.fetchrow(
                f"SELECT json_build_array(price::text, id::text)::text, price FROM {TABLE} "
                f"WHERE site_id = $1 ORDER BY {keys} OFFSET $2 LIMIT 1",
                SITE_A,
                before - 1,
            )
            assert (price is None) == null
            pairs, query = _query(order, key_json, before // LIMIT + 1)

            # The page is the right one ...
            expected = [
                str(r["id"])
                for r in await conn.fetch(
                    f"SELECT id FROM {TABLE} WHERE site_id = $1 ORDER BY {keys} "
                    f"OFFSET $2 LIMIT {LIMIT}",
                    SITE_A,
                    before,
                )
            ]
            answer = await run_entity_call(pool, payload("list", query=pairs), timeout=5)
            body = orjson.loads(answer.body)
            assert [row["id"] for row in body["data"]] == expected
            assert body["pagination"]["total"] == ROWS and body["pagination"]["next_cursor"]

            # ... read by index range scans that start at the cursor.
            statement = sql.list_statement(schema(), SITE_A, query)
            for plan in await _plans(conn, statement):
                nodes = _page_nodes(plan)
                heavy = [(n["Node Type"], _read(n)) for n in nodes if _read(n) > BOUND]
                assert not heavy, (order, before, heavy)
                scans = [n for n in nodes if "Scan" in n["Node Type"]]
                table_scans = [n for n in scans if n.get("Relation Name") == TABLE]
                assert table_scans and all(
                    n["Node Type"] == "Index Scan"
                    and n["Index Name"] == f"{TABLE}_site_id_price_id_idx"
                    and "site_id = " in n["Index Cond"]
                    for n in table_scans
                ), [(n["Node Type"], n.get("Index Name"), n.get("Index Cond")) for n in scans]
                conditions = " ".join(n["Index Cond"] for n in table_scans)
                if not null:
                    assert "ROW(price, id) " in conditions, conditions
                else:
                    assert "price IS NULL" in conditions and "id " in conditions, conditions
    finally:
        await pool.close()
        await conn.close()
