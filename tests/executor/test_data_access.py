"""ctx.db end to end: the JS builder in a real V8 isolate, its specs run as SQL on real Postgres.

The seed's five CRM handlers run verbatim; tenancy, injection, filters, bounds and error shapes
are checked through the same path, and spec -> SQL once more without a database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from py_mini_racer import MiniRacer

from proxy.executor import data_access
from proxy.executor.data_access import (
    MAX_ROWS,
    QueryRefused,
    build_statement,
    execute_query,
    physical_table,
)
from proxy.executor.db_client_js import DB_CLIENT_JS
from tests.executor.seed_crm import CREATE, DELETE, GET, LIST, UPDATE

MODULE = "6f1c2a9e-3b7d-4c1a-9e2f-0a1b2c3d4e5f"
OTHER_MODULE = "0bad0bad-0000-4000-8000-000000000000"
SITE_A = "aaaaaaaa-0000-4000-8000-000000000001"
SITE_B = "bbbbbbbb-0000-4000-8000-000000000002"

SCHEMA = """
CREATE TABLE mod_6f1c2a9e_contacts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), site_id uuid NOT NULL, name text NOT NULL,
  email text, tags jsonb, created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (site_id, email));
CREATE TABLE mod_6f1c2a9e_deals (
  id serial PRIMARY KEY, site_id uuid NOT NULL, title text NOT NULL, amount numeric(12, 2),
  won boolean, labels text[], meta json, closes_on date);
CREATE TABLE mod_0bad0bad_contacts (LIKE mod_6f1c2a9e_contacts INCLUDING ALL);
CREATE TABLE mod_6f1c2a9e_settings (id int PRIMARY KEY, name text);
"""

# The seed's "Example: CRM Module API Routes" handlers, verbatim.
DEALS: list[dict[str, Any]] = [
    {"title": "alpha", "amount": 10, "won": True, "labels": ["hot"], "closes_on": "2024-01-10"},
    {"title": "Beta", "amount": 20.5, "won": False, "labels": [], "closes_on": "2024-02-10"},
    {"title": "gamma", "amount": 30, "won": None, "labels": ["hot", "big"], "meta": {"k": 1}},
    {"title": "delta", "amount": None, "won": True, "closes_on": "2024-03-10"},
]


class Handlers:
    """Runs handler bodies in one MiniRacer: `async function(ctx){ body }` with ctx.db."""

    def __init__(self, mr: MiniRacer, conn: Any) -> None:
        self.mr, self.conn = mr, conn
        self.specs: list[dict[str, Any]] = []
        self.mr.eval(DB_CLIENT_JS)
        self.make_db: Any = self.mr.eval("__modgateMakeDb")
        self._set_db: Any = self.mr.eval("(function (db) { globalThis.__testDb = db; })")

    async def run(
        self,
        body: str,
        *,
        site: str | None = SITE_A,
        module: str = MODULE,
        params: dict[str, Any] | None = None,
        request_body: Any = None,
    ) -> dict[str, Any]:
        """{"ok": return value} or {"thrown": what the handler threw}."""

        async def call(spec_json: Any) -> str:
            spec = orjson.loads(spec_json)
            self.specs.append(spec)
            result = await execute_query(self.conn, module_id=module, site_id=site, spec=spec)
            return orjson.dumps(result).decode()

        ctx = json.dumps({"params": params or {}, "body": request_body})
        source = (
            f"(async function (ctx) {{\n{body}\n}})(Object.assign({ctx}, {{db: __testDb}}))"
            ".then(r => JSON.stringify({ok: r === undefined ? null : r}),"
            " e => JSON.stringify({thrown: e instanceof Error ? {message: String(e)} : e}))"
        )
        async with self.mr.wrap_py_function(call) as call_fn:
            self._set_db(self.make_db(call_fn))
            promise: Any = await asyncio.wait_for(self.mr.eval_cancelable(source), 5)
            text = await asyncio.wait_for(promise, 10)
        result: dict[str, Any] = orjson.loads(text)
        return result

    async def db(self, chain: str, **kwargs: Any) -> dict[str, Any]:
        """`{data, error}` of `await ctx.db.<chain>`."""
        result = await self.run(f"return await ctx.db.{chain};", **kwargs)
        outcome: dict[str, Any] = result["ok"]
        return outcome


@pytest.fixture
async def conn(database: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(SCHEMA)
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def js(conn: Any) -> AsyncIterator[Handlers]:
    mr = MiniRacer()
    try:
        yield Handlers(mr, conn)
    finally:
        mr.close()


async def _add_deals(js: Handlers, site: str = SITE_A) -> None:
    result = await js.db(f"from('deals').insert({json.dumps(DEALS)})", site=site)
    assert result == {"data": None, "error": None}


def _titles(result: dict[str, Any]) -> list[str]:
    assert result["error"] is None, result
    return [row["title"] for row in result["data"]]


# --- the seed's CRM handlers --------------------------------------------------------------


async def test_crm_handlers_create_list_get_update_delete(js: Handlers) -> None:
    created = await js.run(CREATE, request_body={"name": "Ada", "email": "ada@x.io", "tags": ["v"]})
    row = created["ok"]
    assert row["name"] == "Ada" and row["tags"] == ["v"] and row["site_id"] == SITE_A
    assert dt.datetime.fromisoformat(row["created_at"]).tzinfo is not None
    await js.run(CREATE, request_body={"name": "Bob"})

    listed = await js.run(LIST)
    assert sorted(c["name"] for c in listed["ok"]["contacts"]) == ["Ada", "Bob"]
    assert (await js.run(GET, params={"id": row["id"]}))["ok"] == row

    updated = await js.run(UPDATE, params={"id": row["id"]}, request_body={"email": "a@y.io"})
    assert updated["ok"] == {**row, "email": "a@y.io"}

    assert (await js.run(DELETE, params={"id": row["id"]})) == {"ok": {"success": True}}
    gone = await js.run(GET, params={"id": row["id"]})
    assert gone == {
        "thrown": {
            "message": "JSON object requested, multiple (or no) rows returned",
            "code": "PGRST116",
            "details": "The result contains 0 rows",
        }
    }
    assert [s["action"] for s in js.specs] == ["insert"] * 2 + ["select"] * 2 + [
        "update",
        "delete",
        "select",
    ]


async def test_crm_specs_follow_the_contract(js: Handlers) -> None:
    await js.run(UPDATE, params={"id": SITE_B}, request_body={"name": "x"})
    assert js.specs == [
        {
            "table": "contacts",
            "action": "update",
            "columns": "*",
            "values": {"name": "x"},
            "filters": [["eq", "id", SITE_B]],
            "order": [],
            "limit": None,
            "range": None,
            "single": "single",
        }
    ]


async def test_crm_errors_thrown_by_handlers_keep_the_postgres_code(js: Handlers) -> None:
    bad_id = (await js.run(GET, params={"id": "not-a-uuid"}))["thrown"]
    assert bad_id == {
        "message": 'invalid input syntax for type uuid: "not-a-uuid"',
        "code": "22P02",
    }
    missing_name = await js.run(CREATE, request_body={"email": "e@x.io"})
    assert missing_name["thrown"]["code"] == "23502"
    assert "mod_" not in missing_name["thrown"]["message"]
    await js.run(CREATE, request_body={"name": "A", "email": "dup@x.io"})
    dup = await js.run(CREATE, request_body={"name": "B", "email": "dup@x.io"})
    assert dup["thrown"]["code"] == "23505"
    assert dup["thrown"]["message"] == (
        'duplicate key value violates unique constraint "contacts_site_id_email_key"'
    )


# --- tenancy ----------------------------------------------------------------------------------


async def test_rows_of_another_site_are_invisible_unchangeable_undeletable(
    js: Handlers, conn: Any
) -> None:
    theirs = (await js.run(CREATE, site=SITE_B, request_body={"name": "Theirs"}))["ok"]
    await js.run(CREATE, request_body={"name": "Mine"})

    assert [c["name"] for c in (await js.run(LIST))["ok"]["contacts"]] == ["Mine"]
    assert (await js.run(GET, params={"id": theirs["id"]}))["thrown"]["code"] == "PGRST116"
    changed = await js.run(UPDATE, params={"id": theirs["id"]}, request_body={"name": "pwned"})
    assert changed["thrown"]["code"] == "PGRST116"
    assert (await js.run(DELETE, params={"id": theirs["id"]})) == {"ok": {"success": True}}
    spoofed = await js.db(f"from('contacts').select('*').eq('site_id', '{SITE_B}')")
    assert spoofed == {"data": [], "error": None}

    row = await conn.fetchrow("SELECT * FROM mod_6f1c2a9e_contacts WHERE id = $1", theirs["id"])
    assert row["name"] == "Theirs" and str(row["site_id"]) == SITE_B


async def test_insert_is_stamped_and_update_cannot_move_a_row(js: Handlers) -> None:
    forged = await js.run(CREATE, request_body={"name": "F", "site_id": SITE_B})
    assert forged["ok"]["site_id"] == SITE_A
    moved = await js.run(
        UPDATE, params={"id": forged["ok"]["id"]}, request_body={"name": "G", "site_id": SITE_B}
    )
    assert moved["ok"]["site_id"] == SITE_A and moved["ok"]["name"] == "G"
    only_site = await js.db(f"from('contacts').update({{site_id: '{SITE_B}'}}).eq('name', 'G')")
    assert only_site["error"]["code"] == "invalid_query"
    bulk = await js.db(f"from('contacts').insert([{{name: 'H', site_id: '{SITE_B}'}}]).select()")
    assert [r["site_id"] for r in bulk["data"]] == [SITE_A]


async def test_no_site_context_runs_no_query(js: Handlers, conn: Any) -> None:
    result = await js.run(CREATE, site=None, request_body={"name": "x"})
    assert result["thrown"]["code"] == "no_site"
    assert await conn.fetchval("SELECT count(*) FROM mod_6f1c2a9e_contacts") == 0


async def test_a_table_without_site_id_is_refused(js: Handlers) -> None:
    result = await js.db("from('settings').select('*')")
    assert result["error"] == {"message": "column settings.site_id does not exist", "code": "42703"}


async def test_another_modules_tables_are_unreachable(js: Handlers) -> None:
    await js.run(CREATE, module=OTHER_MODULE, request_body={"name": "Other module"})
    assert (await js.run(LIST))["ok"] == {"contacts": []}
    direct = await js.db("from('mod_0bad0bad_contacts').select('*')")
    assert direct["error"] == {
        "message": "relation mod_0bad0bad_contacts does not exist",
        "code": "42P01",
    }
    listed = await js.run(LIST, module=OTHER_MODULE)
    assert [c["name"] for c in listed["ok"]["contacts"]] == ["Other module"]


# --- injection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chain",
    [
        "from('../x').select('*')",
        "from('contacts; drop table mod_6f1c2a9e_contacts').select('*')",
        "from('contacts\"').select('*')",
        "from('Contacts').select('*')",
        "from('').select('*')",
        "from(null).select('*')",
        "from('public.contacts').select('*')",
        "from('contacts').select('name, \"email\"')",
        "from('contacts').select('name; drop table x')",
        "from('contacts').select('*, (select 1)')",
        "from('contacts').select('*').eq('name\" = name --', 'x')",
        "from('contacts').select('*').order('name desc, (select 1)')",
        "from('contacts').insert({'name) values (1); --': 'x'})",
        "from('contacts').update({'name\"': 'x'}).eq('name', 'x')",
        "from('x'.repeat(60)).select('*')",
    ],
)
async def test_identifier_injection_is_refused(js: Handlers, conn: Any, chain: str) -> None:
    result = await js.db(chain)
    assert result["data"] is None and result["error"]["code"] == "invalid_identifier"
    assert await conn.fetchval("SELECT to_regclass('mod_6f1c2a9e_contacts') IS NOT NULL")


async def test_values_are_data_never_sql(js: Handlers, conn: Any) -> None:
    evil = "x'); DROP TABLE mod_6f1c2a9e_contacts; --"
    created = await js.run(CREATE, request_body={"name": evil, "email": "%"})
    assert created["ok"]["name"] == evil
    found = await js.db(f"from('contacts').select('name').eq('name', {json.dumps(evil)})")
    assert found == {"data": [{"name": evil}], "error": None}
    assert (await js.db("from('contacts').select('name').like('name', \"x'%\")"))["data"]
    assert await conn.fetchval("SELECT count(*) FROM mod_6f1c2a9e_contacts") == 1


# --- filters, order, bounds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "titles"),
    [
        ("eq('title', 'alpha')", ["alpha"]),
        ("neq('title', 'alpha')", ["Beta", "delta", "gamma"]),
        ("gt('amount', 10)", ["Beta", "gamma"]),
        ("gte('amount', 10)", ["alpha", "Beta", "gamma"]),
        ("lt('amount', '20.5')", ["alpha"]),
        ("lte('amount', 20.5)", ["alpha", "Beta"]),
        ("gte('closes_on', '2024-02-01')", ["Beta", "delta"]),
        ("in('title', ['alpha', 'gamma', 'nope'])", ["alpha", "gamma"]),
        ("in('id', [])", []),
        ("like('title', '%a')", ["alpha", "Beta", "delta", "gamma"]),
        ("like('title', 'b%')", []),
        ("ilike('title', 'b%')", ["Beta"]),
        ("eq('won', true)", ["alpha", "delta"]),
        ("eq('won', null)", ["gamma"]),
        ("neq('won', null).eq('won', false)", ["Beta"]),
        ("eq('labels', ['hot', 'big'])", ["gamma"]),
        ("gt('amount', 5).lt('amount', 25).neq('title', 'Beta')", ["alpha"]),
    ],
)
async def test_filters(js: Handlers, chain: str, titles: list[str]) -> None:
    await _add_deals(js)
    await _add_deals(js, site=SITE_B)
    result = await js.db(f"from('deals').select('title').{chain}.order('title')")
    assert sorted(_titles(result), key=str.lower) == sorted(titles, key=str.lower)


async def test_order_limit_range(js: Handlers) -> None:
    await _add_deals(js)
    ordered = await js.db(
        "from('deals').select('title').order('won').order('title', {ascending: false})"
    )
    assert _titles(ordered) == ["Beta", "delta", "alpha", "gamma"]  # nulls last when ascending
    desc = await js.db("from('deals').select('title, amount').order('amount', {ascending: false})")
    assert desc["data"][0] == {"title": "delta", "amount": None}
    assert _titles(await js.db("from('deals').select('title').order('id').limit(2)")) == [
        "alpha",
        "Beta",
    ]
    assert _titles(await js.db("from('deals').select('title').order('id').range(1, 2)")) == [
        "Beta",
        "gamma",
    ]
    assert _titles(await js.db("from('deals').select('title').order('id').range(3, 9)")) == [
        "delta"
    ]
    bad = await js.db("from('deals').select('*').limit(-1)")
    assert bad["error"]["code"] == "invalid_query"


async def test_single_and_maybe_single(js: Handlers) -> None:
    await _add_deals(js)
    one = await js.db("from('deals').select('title').eq('title', 'alpha').maybeSingle()")
    assert one == {"data": {"title": "alpha"}, "error": None}
    none = await js.db("from('deals').select('*').eq('title', 'zzz').maybeSingle()")
    assert none == {"data": None, "error": None}
    many = await js.db("from('deals').select('*').eq('won', true).maybeSingle()")
    assert many["data"] is None and many["error"]["code"] == "PGRST116"
    assert many["error"]["details"] == "The result contains 2 rows"
    assert (await js.db("from('deals').select('*').single()"))["error"]["code"] == "PGRST116"


async def test_a_write_that_breaks_single_is_rolled_back(js: Handlers, conn: Any) -> None:
    await _add_deals(js)
    result = await js.db("from('deals').update({title: 'same'}).eq('won', true).select().single()")
    assert result["error"]["details"] == "The result contains 2 rows"
    assert await conn.fetchval("SELECT count(*) FROM mod_6f1c2a9e_deals WHERE title = 'same'") == 0


async def test_update_and_delete_need_a_filter(js: Handlers, conn: Any) -> None:
    await _add_deals(js)
    everything = await js.db("from('deals').delete()")
    assert everything["error"] == {"message": "DELETE requires a WHERE clause", "code": "21000"}
    assert (await js.db("from('deals').update({won: true})"))["error"]["code"] == "21000"
    assert await conn.fetchval("SELECT count(*) FROM mod_6f1c2a9e_deals") == 4


async def test_rows_are_capped(js: Handlers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_access, "MAX_ROWS", 3)
    monkeypatch.setattr(data_access, "MAX_INSERT_ROWS", 4)
    await _add_deals(js)
    assert len((await js.db("from('deals').select('*')"))["data"]) == 3
    assert len((await js.db("from('deals').select('*').limit(100)"))["data"]) == 3
    too_many = await js.db("from('deals').insert([{}, {}, {}, {}, {}])")
    assert too_many["error"]["code"] == "invalid_query"


async def test_bulk_insert_returns_rows_in_order(js: Handlers) -> None:
    rows = await js.db(f"from('deals').insert({json.dumps(DEALS)}).select('title, amount')")
    assert rows["data"] == [{"title": d["title"], "amount": d["amount"]} for d in DEALS]
    assert await js.db("from('deals').insert([]).select()") == {"data": [], "error": None}
    deleted = await js.db("from('deals').delete().in('title', ['alpha', 'Beta']).select('title')")
    assert sorted(_titles(deleted)) == ["Beta", "alpha"]


async def test_json_values_round_trip(js: Handlers) -> None:
    tags = {"level": 3, "list": [1, "two", None, {"deep": True}], "s": "it's"}
    created = await js.run(CREATE, request_body={"name": "J", "tags": tags})
    contact = created["ok"]
    assert contact["tags"] == tags
    found = await js.db(f"from('contacts').select('name').eq('tags', {json.dumps(tags)})")
    assert found["data"] == [{"name": "J"}]
    updated = await js.run(UPDATE, params={"id": contact["id"]}, request_body={"tags": [1, 2]})
    assert updated["ok"]["tags"] == [1, 2]
    deal = await js.db("from('deals').insert({title: 'm', meta: {a: [1]}}).select('meta').single()")
    assert deal == {"data": {"meta": {"a": [1]}}, "error": None}


async def test_undefined_table_error_uses_the_logical_name(js: Handlers) -> None:
    for chain in (
        "from('nope').select('*')",
        "from('nope').insert({a: 1}).select()",
        "from('nope').update({a: 1}).eq('a', 1)",
        "from('nope').delete().eq('a', 1)",
    ):
        result = await js.db(chain)
        assert result == {
            "data": None,
            "error": {"message": "relation nope does not exist", "code": "42P01"},
        }


async def test_undefined_column_and_bad_spec_errors(js: Handlers) -> None:
    missing = await js.db("from('contacts').select('nope')")
    assert missing["error"] == {"message": "column contacts.nope does not exist", "code": "42703"}
    wrong_type = await js.db("from('deals').insert({title: 't', amount: 'lots'})")
    assert wrong_type["error"]["code"] == "22P02" and "mod_" not in wrong_type["error"]["message"]
    assert (await js.db("from('deals').select('*').like('title', 5)"))["error"]["code"] == (
        "invalid_query"
    )


# --- the JS builder itself ---------------------------------------------------------------------


async def test_builder_sends_one_spec_per_await_and_rejects_on_host_failure(js: Handlers) -> None:
    twice = await js.run(
        "const q = ctx.db.from('contacts').select('*');"
        "const a = await q; const b = await q; return [a, b];"
    )
    assert twice["ok"] == [{"data": [], "error": None}] * 2 and len(js.specs) == 1
    rejected = await js.run("return await ctx.db.from('contacts').select('*');", module="!!!")
    assert rejected["ok"]["error"]["code"] == "invalid_identifier"

    async def broken(_spec: Any) -> str:
        raise RuntimeError("host down")

    async with js.mr.wrap_py_function(broken) as call_fn:
        db = js.make_db(call_fn)
        run: Any = js.mr.eval(
            "(db => db.from('contacts').select('*').then(() => 'resolved', () => 'rejected'))"
        )
        assert await asyncio.wait_for(run(db), 5) == "rejected"


def test_db_client_defines_one_global() -> None:
    mr = MiniRacer()
    try:
        names = "Object.getOwnPropertyNames(globalThis).join(',')"
        before = set(str(mr.eval(names)).split(","))
        mr.eval(DB_CLIENT_JS)
        assert set(str(mr.eval(names)).split(",")) - before == {"__modgateMakeDb"}
    finally:
        mr.close()


# --- spec -> SQL, no database ------------------------------------------------------------------


def test_physical_table_names() -> None:
    assert physical_table(MODULE, "contacts") == "mod_6f1c2a9e_contacts"
    assert physical_table(MODULE.upper(), "contacts") == "mod_6f1c2a9e_contacts"
    assert physical_table("crm-module-id", "contacts") == "mod_crmmodul_contacts"
    with pytest.raises(QueryRefused):
        physical_table(MODULE, "contacts x")


def test_select_sql_keeps_values_out_of_the_text() -> None:
    spec = {
        "table": "contacts",
        "columns": "id, name",
        "filters": [
            ["eq", "name", "Robert'); DROP TABLE students;--"],
            ["in", "email", ["a@x.io", "b@x.io"]],
            ["ilike", "email", "%@x.io"],
        ],
        "order": [["name", False]],
        "range": [10, 19],
    }
    statement = build_statement(spec, module_id=MODULE, site_id=SITE_A)
    sql = statement.sql
    assert '"mod_6f1c2a9e_contacts" AS "contacts"' in sql
    assert 'SELECT "contacts"."id", "contacts"."name" FROM' in sql
    assert '"contacts"."site_id" = (SELECT "contacts"."site_id" FROM jsonb_populate_record(' in sql
    assert '"contacts"."email" = ANY(ARRAY(SELECT "contacts"."email" FROM' in sql
    assert '"contacts"."email"::text ILIKE $4::text' in sql
    assert 'ORDER BY "contacts"."name" DESC LIMIT $5 OFFSET $6)' in sql
    for needle in ("Robert", "a@x.io", "%@x.io", SITE_A, "DROP", "19"):
        assert needle not in sql
    assert statement.args == (
        f'{{"site_id":"{SITE_A}"}}',
        '{"name":"Robert\'); DROP TABLE students;--"}',
        '[{"email":"a@x.io"},{"email":"b@x.io"}]',
        "%@x.io",
        10,
        10,
    )
    assert statement.returning and not statement.write


def test_writes_stamp_the_site_and_cap_the_limit() -> None:
    insert = build_statement(
        {"table": "contacts", "action": "insert", "values": [{"name": "a", "site_id": SITE_B}]},
        module_id=MODULE,
        site_id=SITE_A,
    )
    assert insert.sql.startswith(
        'INSERT INTO "mod_6f1c2a9e_contacts" AS "contacts" ("name", "site_id")'
    )
    assert orjson.loads(insert.args[0]) == [{"name": "a", "site_id": SITE_A}]
    assert not insert.returning and "RETURNING" not in insert.sql
    delete = build_statement(
        {"table": "contacts", "action": "delete", "filters": [["eq", "id", 1]], "columns": "*"},
        module_id=MODULE,
        site_id=SITE_A,
    )
    assert 'RETURNING "contacts".*' in delete.sql and delete.write
    select = build_statement({"table": "contacts"}, module_id=MODULE, site_id=SITE_A)
    assert select.args[-2:] == (MAX_ROWS, 0)


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"table": "contacts", "action": "truncate"}, "invalid_query"),
        ({"table": "contacts", "filters": [["regex", "name", "x"]]}, "invalid_query"),
        ({"table": "contacts", "filters": [["eq", "name"]]}, "invalid_query"),
        ({"table": "contacts", "filters": "name=x"}, "invalid_query"),
        ({"table": "contacts", "single": "many"}, "invalid_query"),
        ({"table": "contacts", "order": [["name", "desc"]]}, "invalid_query"),
        ({"table": "contacts", "range": [5]}, "invalid_query"),
        ({"table": "contacts", "limit": True}, "invalid_query"),
        ({"table": "contacts", "action": "insert", "values": "x"}, "invalid_query"),
        (
            {"table": "contacts", "action": "update", "values": [], "filters": [["eq", "a", 1]]},
            "invalid_query",
        ),
        ({"table": "contacts", "action": "delete", "filters": [], "limit": 1}, "invalid_query"),
        ({"table": "contacts", "action": "delete"}, "21000"),
        ({"table": "contacts", "columns": ["id"]}, "invalid_identifier"),
        ({"table": "contacts", "columns": ""}, "invalid_identifier"),
    ],
)
def test_malformed_specs_are_refused(spec: dict[str, Any], code: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        build_statement(spec, module_id=MODULE, site_id=SITE_A)
    assert refused.value.code == code
