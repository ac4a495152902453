"""apply_manifest and load_modules against a real Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from proxy.errors import ManifestError, StoreError
from proxy.routing.manifest import Manifest
from proxy.routing.model import ModuleSpec, RouteSpec
from proxy.store.routes import ModuleApplyResult, apply_manifest, load_modules

CHANNEL = "modgate_invalidate"

CRM = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d01"
BOOKING = "7c1d0e22-9f0a-4b7e-8e61-2a3b4c5d6e02"

SCHEMA = {
    "type": "object",
    "required": ["email"],
    "properties": {"email": {"type": "string"}, "tags": {"type": "array"}, "n": 1.5},
    "description": "Kontakt: ünïcode, 日本",
}


def route(path: str, method: str = "GET", **fields: object) -> RouteSpec:
    values: dict[str, object] = {"handler_type": "proxy"}
    values.update(fields)
    return RouteSpec(path=path, method=method, **values)  # type: ignore[arg-type]


CRM_ROUTES = (
    route("/contacts", required_scopes=("read:contacts",), cache_ttl_seconds=30),
    route(
        "/contacts",
        "POST",
        required_scopes=("write:contacts", "read:contacts"),
        request_schema=SCHEMA,
        response_schema={"type": "object"},
        summary="Create a contact",
        rate_limit_per_minute=10,
    ),
    route("/contacts/:id", handler_url="http://crm-v2:8000"),
    route("/health", handler_type="static", handler_code='{"ok": true}', requires_auth=False),
)


def crm(*routes: RouteSpec, name: str | None = "crm", upstream: str | None = None) -> ModuleSpec:
    return ModuleSpec(
        id=CRM,
        name=name,
        upstream=upstream or "http://crm:8000",
        routes=routes or CRM_ROUTES,
    )


def booking(*routes: RouteSpec, name: str | None = "booking") -> ModuleSpec:
    return ModuleSpec(
        id=BOOKING,
        name=name,
        upstream="http://booking:8000",
        routes=routes or (route("/slots"), route("/slots", "POST")),
    )


def manifest(*modules: ModuleSpec) -> Manifest:
    return Manifest(modules=modules)


def without_ids(module: ModuleSpec) -> ModuleSpec:
    routes = tuple(dataclasses.replace(r, id=None) for r in module.routes)
    return dataclasses.replace(module, routes=routes)


def sorted_routes(module: ModuleSpec) -> ModuleSpec:
    ordered = tuple(sorted(module.routes, key=lambda r: (r.path, r.method)))
    return dataclasses.replace(module, routes=ordered)


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


async def route_rows(conn: asyncpg.Connection, module_id: str) -> dict[tuple[str, str], dict]:
    rows = await conn.fetch(
        "SELECT id, path, method, is_active, updated_at FROM module_api_routes "
        "WHERE module_id = $1",
        module_id,
    )
    return {(r["path"], r["method"]): dict(r) for r in rows}


# -- apply_manifest -------------------------------------------------------------------------


async def test_apply_then_load_round_trips(conn: asyncpg.Connection) -> None:
    results = await apply_manifest(conn, manifest(crm(), booking()))
    assert results == [ModuleApplyResult(CRM, 4, 0), ModuleApplyResult(BOOKING, 2, 0)]
    loaded = await load_modules(conn, docs=True)
    assert [without_ids(m) for m in loaded] == [sorted_routes(crm()), sorted_routes(booking())]
    assert all(uuid.UUID(r.id or "") for m in loaded for r in m.routes)


async def test_reapplying_unchanged_manifest_writes_nothing(
    conn: asyncpg.Connection, database: str
) -> None:
    await apply_manifest(conn, manifest(crm(), booking()))
    before = await route_rows(conn, CRM)
    received: asyncio.Queue[str] = asyncio.Queue()
    listening = await asyncpg.connect(database)
    try:
        await listening.add_listener(CHANNEL, lambda *args: received.put_nowait(args[3]))
        results = await apply_manifest(conn, manifest(crm(), booking()))
        # Delivery follows commit order: anything the apply caused arrives before this marker.
        await conn.execute("SELECT pg_notify($1, 'mark')", CHANNEL)
        assert await asyncio.wait_for(received.get(), 5) == "mark"
    finally:
        await listening.close()
    assert results == [ModuleApplyResult(CRM, 0, 0), ModuleApplyResult(BOOKING, 0, 0)]
    assert await route_rows(conn, CRM) == before


async def test_removed_route_is_deactivated_then_revived(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm()))
    before = await route_rows(conn, CRM)
    kept = CRM_ROUTES[:2] + CRM_ROUTES[3:]  # without GET /contacts/:id

    assert await apply_manifest(conn, manifest(crm(*kept))) == [ModuleApplyResult(CRM, 0, 1)]
    rows = await route_rows(conn, CRM)
    assert len(rows) == 4  # deactivated, not deleted
    assert rows[("/contacts/:id", "GET")]["is_active"] is False
    assert [r.path for r in (await load_modules(conn))[0].routes] == [
        "/contacts",
        "/contacts",
        "/health",
    ]

    assert await apply_manifest(conn, manifest(crm())) == [ModuleApplyResult(CRM, 1, 0)]
    rows = await route_rows(conn, CRM)
    assert rows[("/contacts/:id", "GET")]["is_active"] is True
    assert {k: r["id"] for k, r in rows.items()} == {k: r["id"] for k, r in before.items()}
    assert [without_ids(m) for m in await load_modules(conn, docs=True)] == [sorted_routes(crm())]


async def test_changed_route_is_updated_in_place(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm()))
    before = await route_rows(conn, CRM)
    changed = (dataclasses.replace(CRM_ROUTES[0], required_scopes=("admin",)), *CRM_ROUTES[1:])
    assert await apply_manifest(conn, manifest(crm(*changed))) == [ModuleApplyResult(CRM, 1, 0)]
    after = await route_rows(conn, CRM)
    key = ("/contacts", "GET")
    assert after[key]["updated_at"] > before[key]["updated_at"]
    assert after[("/health", "GET")] == before[("/health", "GET")]
    loaded = (await load_modules(conn, [CRM]))[0]
    assert loaded.routes[0].required_scopes == ("admin",)


async def test_module_name_and_upstream_updates(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm(), booking()))
    await apply_manifest(conn, manifest(crm(name="contacts", upstream="http://crm-2:9000")))
    by_id = {m.id: m for m in await load_modules(conn)}
    assert (by_id[CRM].name, by_id[CRM].upstream) == ("contacts", "http://crm-2:9000")
    assert (by_id[BOOKING].name, by_id[BOOKING].upstream) == ("booking", "http://booking:8000")
    await apply_manifest(conn, manifest(crm(name=None)))
    assert (await load_modules(conn, [CRM]))[0].name is None


async def test_other_modules_are_untouched(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm(), booking()))
    before = await route_rows(conn, BOOKING)
    module_before = await conn.fetchrow("SELECT * FROM modgate_modules WHERE id = $1", BOOKING)
    assert await apply_manifest(conn, manifest(crm(CRM_ROUTES[0]))) == [
        ModuleApplyResult(CRM, 0, 3)
    ]
    assert await route_rows(conn, BOOKING) == before
    assert await conn.fetchrow("SELECT * FROM modgate_modules WHERE id = $1", BOOKING) == (
        module_before
    )


async def test_module_without_routes_deactivates_all(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm()))
    empty = dataclasses.replace(crm(), routes=())
    assert await apply_manifest(conn, manifest(empty)) == [ModuleApplyResult(CRM, 0, 4)]
    assert await load_modules(conn) == [dataclasses.replace(crm(), routes=())]


async def test_name_collision_is_a_store_error(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm()))
    with pytest.raises(StoreError) as caught:
        await apply_manifest(conn, manifest(booking(route("/new"), name="crm")))
    assert str(caught.value) == (
        f"module name 'crm' is already used by module {CRM}; rename or remove that module first"
    )
    # The whole manifest was rolled back.
    assert [m.id for m in await load_modules(conn)] == [CRM]


async def test_names_can_be_swapped_in_one_manifest(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm(), booking()))
    await apply_manifest(conn, manifest(crm(name="booking"), booking(name="crm")))
    assert {m.id: m.name for m in await load_modules(conn)} == {CRM: "booking", BOOKING: "crm"}


async def test_duplicate_route_is_refused_before_writing(conn: asyncpg.Connection) -> None:
    with pytest.raises(ManifestError, match=rf"^module {CRM}: route GET /a is listed twice$"):
        await apply_manifest(conn, manifest(crm(route("/a"), route("/b"), route("/a"))))
    assert await load_modules(conn) == []


async def test_empty_manifest_changes_nothing(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm()))
    assert await apply_manifest(conn, manifest()) == []
    assert len((await load_modules(conn))[0].routes) == 4


async def test_closed_connection_is_a_store_error(database: str) -> None:
    connection = await asyncpg.connect(database)
    await connection.close()
    with pytest.raises(StoreError, match=r"^cannot apply the manifest: "):
        await apply_manifest(connection, manifest(crm()))
    with pytest.raises(StoreError, match=r"^cannot load routes from Postgres: "):
        await load_modules(connection)


@pytest.mark.slow
async def test_ten_thousand_routes(conn: asyncpg.Connection) -> None:
    routes = tuple(
        route(f"/r{i}/:id", method, required_scopes=("read:x",), request_schema={"i": i})
        for i in range(5_000)
        for method in ("GET", "POST")
    )
    big = ModuleSpec(id=BOOKING, name="big", upstream="http://big:80", routes=routes)

    started = time.perf_counter()
    assert await apply_manifest(conn, manifest(big, crm())) == [
        ModuleApplyResult(BOOKING, 10_000, 0),
        ModuleApplyResult(CRM, 4, 0),
    ]
    first = time.perf_counter() - started

    started = time.perf_counter()
    assert (await apply_manifest(conn, manifest(big)))[0] == ModuleApplyResult(BOOKING, 0, 0)
    again = time.perf_counter() - started

    fewer = dataclasses.replace(big, routes=routes[:9_000])
    started = time.perf_counter()
    assert (await apply_manifest(conn, manifest(fewer)))[0] == ModuleApplyResult(BOOKING, 0, 1000)
    shrink = time.perf_counter() - started

    started = time.perf_counter()
    everything = await load_modules(conn)
    load_all = time.perf_counter() - started
    assert [len(m.routes) for m in everything] == [4, 9_000]  # CRM's id sorts first

    started = time.perf_counter()
    one = await load_modules(conn, [CRM])
    load_one = time.perf_counter() - started
    assert [len(m.routes) for m in one] == [4]

    print(
        f"\n10k routes: apply {first:.3f}s, re-apply unchanged {again:.3f}s, "
        f"deactivate 1k {shrink:.3f}s, load all {load_all:.3f}s, load one {load_one * 1e3:.1f}ms"
    )
    assert first < 10.0
    assert load_one < 0.1


# -- load_modules ---------------------------------------------------------------------------


async def test_load_subset_and_unknown_ids(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm(), booking()))
    assert [m.id for m in await load_modules(conn, [BOOKING])] == [BOOKING]
    assert [m.id for m in await load_modules(conn, {CRM.upper(), BOOKING})] == [CRM, BOOKING]
    assert await load_modules(conn, [str(uuid.uuid4()), "not-a-uuid"]) == []
    assert await load_modules(conn, []) == []


async def test_removed_module_yields_no_entry(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm(), booking()))
    await conn.execute("UPDATE module_api_routes SET is_active = false WHERE module_id = $1", CRM)
    # Still present: its modgate_modules row remains (a module with no routes left).
    assert await load_modules(conn, [CRM]) == [dataclasses.replace(crm(), routes=())]
    await conn.execute("DELETE FROM modgate_modules WHERE id = $1", CRM)
    assert await load_modules(conn, [CRM]) == []
    assert [m.id for m in await load_modules(conn)] == [BOOKING]


async def test_gateway_load_leaves_the_docs_out(conn: asyncpg.Connection) -> None:
    # Summary, description and schemas are documentation: without `docs` they stay in Postgres.
    await apply_manifest(conn, manifest(crm()))
    expected = [
        dataclasses.replace(
            r, summary=None, description=None, request_schema=None, response_schema=None
        )
        for r in CRM_ROUTES
    ]
    [module] = await load_modules(conn)
    assert without_ids(module) == sorted_routes(crm(*expected))
    [with_docs] = await load_modules(conn, docs=True)
    assert [r.id for r in with_docs.routes] == [r.id for r in module.routes]


async def test_module_of_routes_written_by_plain_sql(conn: asyncpg.Connection) -> None:
    # The platform's own writers leave nullable seed columns NULL; reads use the seed defaults.
    module_id = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO module_api_routes (module_id, path, method, handler_type, handler_code, "
        "requires_auth, required_scopes, cache_ttl_seconds, request_schema) "
        "VALUES ($1, '/b', 'PATCH', 'function', 'return 1', NULL, NULL, NULL, "
        """'{"a": [1, {"b": null}]}'::jsonb), """
        "($1, '/a', 'GET', 'static', '{}', false, '{x,y}', 5, NULL)",
        module_id,
    )
    [module] = await load_modules(conn, [module_id], docs=True)
    assert (module.id, module.name, module.upstream) == (module_id, None, None)
    first, second = module.routes
    assert (first.path, first.requires_auth, first.required_scopes) == ("/a", False, ("x", "y"))
    assert first.cache_ttl_seconds == 5
    assert (second.path, second.requires_auth, second.required_scopes) == ("/b", True, ())
    assert second.cache_ttl_seconds == 0
    assert second.request_schema == {"a": [1, {"b": None}]}


async def test_jsonb_and_scopes_round_trip(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm()))
    post = next(r for r in (await load_modules(conn, docs=True))[0].routes if r.method == "POST")
    assert post.request_schema == SCHEMA
    assert post.response_schema == {"type": "object"}
    assert post.required_scopes == ("write:contacts", "read:contacts")
    stored = await conn.fetchval(
        "SELECT request_schema->'properties'->'email'->>'type' FROM module_api_routes "
        "WHERE method = 'POST'"
    )
    assert stored == "string"  # stored as JSONB, not as a JSON string


async def test_load_inside_callers_transaction(conn: asyncpg.Connection) -> None:
    await apply_manifest(conn, manifest(crm()))
    async with conn.transaction():
        await conn.execute("UPDATE module_api_routes SET summary = 'uncommitted'")
        [module] = await load_modules(conn, [CRM], docs=True)
    assert {r.summary for r in module.routes} == {"uncommitted"}


async def test_load_is_deterministic(conn: asyncpg.Connection) -> None:
    routes = (route("/b"), route("/a", "POST"), route("/B"), route("/a"), route("/_"))
    await apply_manifest(conn, manifest(booking(*routes), crm()))
    first = await load_modules(conn)
    assert first == await load_modules(conn)
    assert [(r.path, r.method) for r in first[1].routes] == [
        ("/B", "GET"),
        ("/_", "GET"),
        ("/a", "GET"),
        ("/a", "POST"),
        ("/b", "GET"),
    ]
