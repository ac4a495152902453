"""Every generated statement carries the site condition: statements for every operation and
many random list queries, checked on their text (no database needed)."""

from __future__ import annotations

import re

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.executor.entities import cursor as cursors
from proxy.executor.entities import sql
from proxy.executor.entities.query import parse_list_query
from tests.executor.entities.products import SITE_A, TABLE, schema

ROW = "00000000-0000-4000-8000-00000000abcd"
MARK = "zz'); DROP TABLE x; --"  # a value that must never reach the SQL text
SITE_CONDITION = '"products"."site_id" = $1'


def assert_site_bound(statement: sql.EntityStatement) -> None:
    """$1 is the site; every read of the table is filtered by it, an insert is stamped with it."""
    text = statement.sql
    assert statement.args[0] == SITE_A
    assert MARK not in text
    if text.startswith('WITH "#row" AS (INSERT'):
        assert f'INSERT INTO "{TABLE}" AS "products" (' in text and '"site_id")' in text
        assert "|| jsonb_build_object('site_id', $1::text)" in text
        assert text.count(f'"{TABLE}"') == 2  # the target and the record's type: no read
        return
    reference = f'"{TABLE}" AS "products"'
    parts = text.split(reference)
    assert len(parts) >= 2, text
    for after in parts[1:]:  # each read's own WHERE, the first after its table, starts with it
        assert after.split(" WHERE ", 1)[1].startswith(SITE_CONDITION), text
    assert len(re.findall(r"\$1\b", text)) == text.count(SITE_CONDITION) == len(parts) - 1, text


def test_every_operation_binds_the_site() -> None:
    s = schema()
    for statement in (
        sql.read_statement(s, SITE_A, ROW),
        sql.delete_statement(s, SITE_A, ROW),
        sql.create_statement(s, SITE_A, {"name": MARK}),
        sql.create_statement(s, SITE_A, {}),
        sql.update_statement(s, SITE_A, ROW, {"name": MARK}),
        sql.update_statement(s, SITE_A, ROW, {}, defaults=["sku"]),
        sql.update_statement(s, SITE_A, ROW, {"name": MARK, "stock": 1}, defaults=["sku"]),
        sql.list_statement(s, SITE_A, parse_list_query([], s)),
    ):
        assert_site_bound(statement)


FILTERS = st.sampled_from(
    [
        ("name", MARK), ("name[neq]", MARK), ("name[like]", MARK), ("name[ilike]", MARK),
        ("name[in]", f"a,{MARK}"), ("stock[gt]", "1"), ("stock[lte]", "-3"), ("price", "1.5"),
        ("active[is]", "true"), ("tags[is]", "null"), ("meta[is]", "null"),
        ("created_at[gte]", "2024-01-01T00:00:00Z"), ("sku[in]", "a"), ("active", "false"),
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    filters=st.lists(FILTERS, max_size=5, unique_by=lambda p: p[0]),
    sort=st.sampled_from([None, "name", "price", "stock", "created_at"]),
    order=st.sampled_from([None, "asc", "desc"]),
    search=st.sampled_from([None, MARK, "a"]),
    page=st.sampled_from([None, "1", "7"]),
    cursor=st.sampled_from([None, "value", "null"]),
)
def test_every_list_query_binds_the_site(
    filters: list[tuple[str, str]],
    sort: str | None,
    order: str | None,
    search: str | None,
    page: str | None,
    cursor: str | None,
) -> None:
    s = schema()
    pairs = list(filters)
    pairs += [(k, v) for k, v in (("sort", sort), ("order", order), ("search", search)) if v]
    if cursor is not None:
        fingerprint = parse_list_query(pairs, s).fingerprint
        # A value of the sort field's type (a cursor's values are checked against them).
        typed = {"name": MARK, "price": "1.5", "stock": "3"}.get(sort or "", "2024-01-01 00:00+00")
        value = "null" if cursor == "null" else orjson.dumps(typed).decode()
        pairs.append(("cursor", cursors.encode(f'[{value}, "{ROW}"]', 3, fingerprint)))
    elif page is not None:
        pairs.append(("page", page))
    statement = sql.list_statement(s, SITE_A, parse_list_query(pairs, s))
    assert_site_bound(statement)
    text = statement.sql
    # A page reached by cursor never uses OFFSET; one reached by number does.
    assert (" OFFSET $" in text) == (cursor is None)
    # Reads of the table: the total, and the page's index ranges after the cursor: the values
    # past it and, ascending, the NULLs after them (NULLS LAST); from a cursor among the NULLs,
    # the NULLs past it and, descending, the values after them (NULLS FIRST).
    descending = order != "asc"
    ranges = 1 if cursor is None else 2 if (cursor == "value") != descending else 1
    reads = text.count(f'"{TABLE}" AS "products"')
    assert reads == 1 + ranges, text
    assert text.count(" UNION ALL ") == ranges - 1, text
    # No OR but the search's (name OR sku, in each read): an OR in the keyset condition would
    # be a filter over the whole site instead of the start of an index range scan.
    assert text.count(" OR ") == (reads if search is not None else 0), text
    if ranges == 2:
        assert text.count(" LIMIT $") == 3  # each range's, and the merged page's
