"""Entity calls against real Postgres (run_entity_call on an asyncpg pool): the seed's checklist
(CRUD, pagination, filtering, sort, search), keyset cursors over ties and NULLs, and the rules
on hidden, readonly and site_id fields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from proxy.errors import Forbidden, GatewayError, RowNotFound, ValidationFailed
from proxy.executor.entities import run_entity_call
from tests.executor.entities.products import (
    ENTITY,
    SCHEMA_SQL,
    SITE_A,
    SITE_B,
    TABLE,
    VISIBLE,
    payload,
)


class Api:
    """Entity calls as a client sees them: (status, JSON body)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def call(self, operation: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            answer = await run_entity_call(self.pool, payload(operation, **kwargs), timeout=5)
        except GatewayError as err:
            return err.status, {"code": err.code, "error": err.message, "details": err.details}
        return answer.status, orjson.loads(answer.body)

    async def ok(self, operation: str, **kwargs: Any) -> Any:
        status, body = await self.call(operation, **kwargs)
        assert status in (200, 201), body
        return body

    async def create(self, site: str = SITE_A, **fields: Any) -> dict[str, Any]:
        body = await self.ok("create", site=site, body=fields)
        row: dict[str, Any] = body["data"]
        return row

    async def all_ids(self, query: list[tuple[str, str]], site: str = SITE_A) -> list[str]:
        """Ids of every page, following next_cursor."""
        ids: list[str] = []
        cursor: str | None = None
        while True:
            pairs = [*query, ("cursor", cursor)] if cursor else query
            body = await self.ok("list", site=site, query=pairs)
            ids += [row["id"] for row in body["data"]]
            cursor = body["pagination"]["next_cursor"]
            if cursor is None:
                return ids


@pytest.fixture
async def api(database: str) -> AsyncIterator[Api]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        await pool.execute(SCHEMA_SQL)
        yield Api(pool)
    finally:
        await pool.close()


async def test_crud(api: Api) -> None:
    status, body = await api.call(
        "create",
        body={"name": "Lamp", "sku": "L-1", "price": "19.90", "stock": 3, "active": True,
              "tags": ["home"], "meta": {"w": 2}},
    )  # fmt: skip
    assert status == 201
    row = body["data"]
    assert list(row) == VISIBLE  # the config's order, hidden fields left out
    assert row["price"] == 19.9 and row["tags"] == ["home"] and row["meta"] == {"w": 2}
    assert row["updated_at"] is None
    assert await api.ok("read", row_id=row["id"]) == {"data": row}

    updated = (await api.ok("update", row_id=row["id"], body={"stock": 4}))["data"]
    assert updated["stock"] == 4 and updated["name"] == "Lamp" and updated["updated_at"]
    assert await api.ok("delete", row_id=row["id"]) == {"success": True}
    assert (await api.call("read", row_id=row["id"]))[0] == 404
    status, body = await api.call("delete", row_id=row["id"])
    assert (status, body["code"]) == (404, "not_found")


async def test_put_replaces_and_patch_merges(api: Api) -> None:
    row = await api.create(name="Desk", sku="D-1", stock=5)
    status, body = await api.call("update", method="PUT", row_id=row["id"], body={"stock": 1})
    assert (status, body["details"]) == (400, ["name is required"])
    put = (await api.ok("update", method="PUT", row_id=row["id"], body={"name": "Desk 2"}))["data"]
    assert (put["name"], put["sku"], put["stock"]) == ("Desk 2", None, None)  # back to defaults
    patch = (await api.ok("update", row_id=row["id"], body={"sku": "D-2"}))["data"]
    assert (patch["name"], patch["sku"]) == ("Desk 2", "D-2")
    status, _ = await api.call("update", row_id="00000000-0000-4000-8000-000000000000", body={})
    assert status == 404


async def test_hidden_readonly_and_site_id_are_never_written(api: Api, database: str) -> None:
    forged = "cccccccc-0000-4000-8000-000000000003"
    row = await api.create(
        name="Chair", secret="leak", site_id=forged, id=forged, created_at="2000-01-01T00:00:00Z",
        updated_at="2000-01-01T00:00:00Z",
    )  # fmt: skip
    assert row["id"] != forged and not row["created_at"].startswith("2000")
    assert row["updated_at"] is None and "secret" not in row
    updated = await api.ok(
        "update", row_id=row["id"], body={"site_id": forged, "secret": "x", "id": forged}
    )
    assert updated["data"]["id"] == row["id"]
    conn = await asyncpg.connect(database)
    try:
        stored = await conn.fetchrow(f"SELECT site_id::text, secret FROM {TABLE}")
    finally:
        await conn.close()
    assert tuple(stored) == (SITE_A, "hush")
    # The other site sees nothing of it, by any operation.
    assert (await api.ok("list", site=SITE_B))["data"] == []
    for operation in ("read", "update", "delete"):
        status, _ = await api.call(operation, site=SITE_B, row_id=row["id"], body={"name": "x"})
        assert status == 404, operation


async def test_pagination_by_page_and_by_cursor(api: Api) -> None:
    for i in range(7):
        await api.create(name=f"p{i}", stock=i % 3)
    body = await api.ok(
        "list", query=[("limit", "3"), ("page", "2"), ("sort", "name"), ("order", "asc")]
    )
    assert [r["name"] for r in body["data"]] == ["p3", "p4", "p5"]
    pagination = body["pagination"]
    assert {k: pagination[k] for k in ("page", "limit", "total", "totalPages")} == {
        "page": 2, "limit": 3, "total": 7, "totalPages": 3,
    }  # fmt: skip
    after = await api.ok(
        "list",
        query=[
            ("limit", "3"),
            ("sort", "name"),
            ("order", "asc"),
            ("cursor", pagination["next_cursor"]),
        ],
    )
    assert [r["name"] for r in after["data"]] == ["p6"]
    assert after["pagination"]["page"] == 3 and after["pagination"]["next_cursor"] is None
    assert after["pagination"]["total"] == 7
    default = await api.ok("list")
    assert [r["name"] for r in default["data"]] == [f"p{i}" for i in range(6, -1, -1)]
    assert default["pagination"] == {
        "page": 1, "limit": 20, "total": 7, "totalPages": 1, "next_cursor": None,
    }  # fmt: skip


async def test_list_answers_are_compact_json(api: Api) -> None:
    answer = await run_entity_call(api.pool, payload("list"), timeout=5)
    assert answer.body.startswith(b'{"data":[],"pagination":')
    for i in range(3):
        await api.create(name=f"line\n{i}", sku=f"s-{i}", meta={"k": [1, 2]})
    query = [("sort", "name"), ("order", "asc")]
    answer = await run_entity_call(api.pool, payload("list", query=query), timeout=5)
    body = answer.body
    # No whitespace between rows (json_agg would write ", \n "); a jsonb value keeps
    # Postgres's own rendering ({"k": [1, 2]}), as in a read.
    assert b"\n" not in body and body.count(b'},{"id":') == 2, body
    rows = orjson.loads(body)["data"]
    assert [r["name"] for r in rows] == [f"line\n{i}" for i in range(3)]
    assert all(list(r) == VISIBLE for r in rows)  # field order kept


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", ["stock", "price", "name", "created_at"])
async def test_cursor_pages_cover_ties_and_nulls_exactly_once(
    api: Api, database: str, sort: str, order: str
) -> None:
    for i in range(23):
        await api.create(
            name=f"n{i % 4}", stock=None if i % 5 == 0 else i % 3, price=None if i % 2 else "1.50"
        )
    conn = await asyncpg.connect(database)
    try:  # ties in created_at too
        await conn.execute(f"UPDATE {TABLE} SET created_at = '2024-01-01' WHERE stock = 1")
        nulls = "LAST" if order == "asc" else "FIRST"
        expected = [
            str(r[0])
            for r in await conn.fetch(
                f"SELECT id FROM {TABLE} ORDER BY {sort} {order} NULLS {nulls}, id {order}"
            )
        ]
    finally:
        await conn.close()
    for limit in ("1", "4", "23", "100"):
        ids = await api.all_ids([("sort", sort), ("order", order), ("limit", limit)])
        assert ids == expected, (limit, sort, order)


async def test_filters(api: Api) -> None:
    rows = [
        await api.create(name="alpha", sku="A-1", price="10", stock=1, active=True, tags=["x"]),
        await api.create(name="Beta", sku="B-2", price="20.50", stock=2, active=False),
        await api.create(name="gamma", sku="a_3", price=None, stock=3, active=None, meta={"k": 1}),
    ]
    by_name = {r["name"]: r for r in rows}

    async def names(*query: tuple[str, str]) -> list[str]:
        body = await api.ok("list", query=[*query, ("sort", "name"), ("order", "asc")])
        return [r["name"] for r in body["data"]]

    assert await names(("name", "alpha")) == ["alpha"]
    assert await names(("name[neq]", "alpha")) == ["Beta", "gamma"]
    assert await names(("price[gt]", "10")) == ["Beta"]
    assert await names(("price[gte]", "10")) == ["Beta", "alpha"]
    assert await names(("stock[lt]", "3"), ("stock[gte]", "2")) == ["Beta"]
    assert await names(("stock[lte]", "1")) == ["alpha"]
    assert await names(("stock[in]", "1,3")) == ["alpha", "gamma"]
    assert await names(("sku[like]", "A-*")) == ["alpha"]
    assert await names(("sku[ilike]", "a%")) == ["alpha", "gamma"]
    assert await names(("active[is]", "null")) == ["gamma"]
    assert await names(("active[is]", "true")) == ["alpha"]
    assert await names(("active", "false")) == ["Beta"]
    assert await names(("price[is]", "null")) == ["gamma"]
    assert await names(("tags[is]", "null")) == ["Beta", "gamma"]
    assert await names(("meta[is]", "null")) == ["Beta", "alpha"]
    assert await names(("created_at[lte]", by_name["Beta"]["created_at"])) == ["Beta", "alpha"]
    body = await api.ok("list", query=[("stock[in]", "1,2,3"), ("limit", "1")])
    assert body["pagination"]["total"] == 3


async def test_search_is_a_case_insensitive_substring_with_no_wildcards(api: Api) -> None:
    await api.create(name="Red Lamp", sku="R-1")
    await api.create(name="blue lamp", sku="B_1")
    await api.create(name="chair", sku="100%")

    async def names(term: str) -> set[str]:
        return {r["name"] for r in (await api.ok("list", query=[("search", term)]))["data"]}

    assert await names("LAMP") == {"Red Lamp", "blue lamp"}
    assert await names("b_1") == {"blue lamp"}  # _ is a character, not a wildcard
    assert await names("%") == {"chair"}
    assert await names("r-") == {"Red Lamp"}
    assert await names("x") == set()


async def details(api: Api, operation: str, **kwargs: Any) -> list[str]:
    status, body = await api.call(operation, **kwargs)
    assert (status, body["code"]) == (400, "validation_failed"), body
    found: list[str] = body["details"]
    return found


async def test_postgres_refusals_are_400s_naming_the_field(api: Api) -> None:
    row = await api.create(name="one", sku="dup")
    # Never Postgres's detail (the conflicting value, maybe another site's), nor the constraint.
    assert await details(api, "create", body={"name": "two", "sku": "dup"}) == [
        "sku already exists"
    ]
    other = await api.create(name="two", sku="other")
    assert await details(api, "update", row_id=other["id"], body={"sku": "dup"}) == [
        "sku already exists"
    ]
    assert await details(api, "create", body={"name": "x", "note": "far too long a note"}) == [
        "note: value too long for type character varying(10)"
    ]
    for price in ("1e400", 123456789012, "1e20"):
        assert await details(api, "create", body={"name": "x", "stock": 1, "price": price}) == [
            "price: numeric field overflow"
        ], price
    assert await details(api, "update", row_id=row["id"], body={"price": 1e15}) == [
        "price: numeric field overflow"
    ]
    status, _ = await api.call("create", body={"name": "x", "created_at": "not a date"})
    assert status == 201  # readonly: dropped before any check


async def test_a_unique_index_without_a_constraint_is_named_too(api: Api, database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(f"CREATE UNIQUE INDEX ON {TABLE} (site_id, lower(name))")
        await conn.execute(f"CREATE UNIQUE INDEX ON {TABLE} (site_id, note, stock)")
    finally:
        await conn.close()
    await api.create(name="Desk", note="n", stock=1)
    assert await details(api, "create", body={"name": "desk"}) == [
        "a row with these values already exists"  # an expression: no field to name
    ]
    assert await details(api, "create", body={"name": "x", "note": "n", "stock": 1}) == [
        "note and stock already exists"
    ]


async def test_nul_characters_and_unknown_keys_are_named(api: Api) -> None:
    row = await api.create(name="one")
    assert await details(
        api, "create", body={"name": "a\x00b", "meta": {"k": ["\x00"]}, "colour": "red"}
    ) == [
        "colour is not a field of products",
        "name must not contain the NUL character (\\u0000)",
        "meta must not contain the NUL character (\\u0000)",
    ]
    assert await details(api, "update", row_id=row["id"], body={"nmae": "x"}) == [
        "nmae is not a field of products"
    ]
    assert await details(api, "list", query=[("sku", "a\x00"), ("search", "\x00")]) == [
        "sku must not contain the NUL character (%00)",
        "search must not contain the NUL character (%00)",
    ]


async def test_query_values_the_column_refuses_name_their_parameter(api: Api) -> None:
    await api.create(name="one", note="short")
    assert await details(api, "list", query=[("price[gt]", "1e400")]) == [
        "price[gt]: numeric field overflow"
    ]
    assert await details(api, "list", query=[("sku[like]", "a\\"), ("sku[ilike]", "a\\\\")]) == [
        "sku[like]: a pattern must not end with a lone backslash (\\ escapes)"
    ]
    entity = {**ENTITY, "filters": [*ENTITY["filters"], "note"]}
    assert await details(api, "list", entity=entity, query=[("note", "x" * 20)]) == [
        "note: value too long for type character varying(10)"
    ]
    # Several values: each is typed by its column again, on its own, to name the refused ones.
    assert await details(
        api,
        "list",
        entity=entity,
        query=[("name", "one"), ("price[in]", "1,1e400"), ("note", "x" * 20)],
    ) == [
        "note: value too long for type character varying(10)",
        "price[in]: numeric field overflow",
    ]


async def test_a_forged_cursor_is_a_400_not_a_500(api: Api) -> None:
    import base64

    from proxy.executor.entities.query import parse_list_query
    from tests.executor.entities.products import schema

    await api.create(name="one", price="1")  # so that Postgres reads the cursor's values
    query = [("sort", "price"), ("order", "asc")]
    fingerprint = parse_list_query(query, schema()).fingerprint
    for values in (
        ["abc", "not-a-uuid"],
        ["1.0", "x"],
        ["1e999999", "00000000-0000-4000-8000-000000000000"],
    ):
        raw = orjson.dumps([*values, 2, fingerprint])
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        status, body = await api.call("list", query=[*query, ("cursor", token)])
        assert (status, body["code"]) == (400, "validation_failed"), values


async def test_a_cursor_with_values_not_of_the_fields_types_names_cursor(api: Api) -> None:
    import base64

    from proxy.executor.entities.query import parse_list_query
    from tests.executor.entities.products import schema

    await api.create(name="one", price="1")
    query = [("sort", "price"), ("order", "asc")]
    fingerprint = parse_list_query(query, schema()).fingerprint

    def token(values: list[Any]) -> str:
        raw = orjson.dumps([*values, 2, fingerprint])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    refused = ["cursor is not one this endpoint made (its values do not fit the sort)"]
    ok_id = "00000000-0000-4000-8000-000000000000"
    for values in (["1", "notauuid"], ["cheap", ok_id], ["1\x00", ok_id]):
        assert await details(api, "list", query=[*query, ("cursor", token(values))]) == refused
    # Postgres's own spellings of a numeric still make a cursor.
    for value in ("NaN", "12.50"):
        assert await api.ok("list", query=[*query, ("cursor", token([value, ok_id]))])
    # Without a declared id, Postgres judges it, and the message names the cursor.
    entity = {**ENTITY, "fields": ENTITY["fields"][1:]}
    fingerprint = parse_list_query(query, schema(entity)).fingerprint
    assert await details(
        api, "list", entity=entity, query=[*query, ("cursor", token(["1", "notauuid"]))]
    ) == ['cursor: invalid input syntax for type uuid: "notauuid"']


async def test_operations_not_listed_and_calls_without_a_site(api: Api) -> None:
    entity = {**ENTITY, "operations": ["list", "read"]}
    status, body = await api.call("create", entity=entity, body={"name": "x"})
    assert (status, body["code"]) == (403, "forbidden")
    status, body = await api.call("list", site=None)
    assert (status, body["code"]) == (403, "forbidden")


def test_error_classes() -> None:
    assert issubclass(ValidationFailed, GatewayError) and ValidationFailed([]).status == 400
    assert RowNotFound().code == "not_found" and Forbidden().status == 403
