"""Entities in Postgres: written with the routes, checked against their tables, read with the
modules, and live through NOTIFY (issue 16)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from proxy.errors import ManifestError
from proxy.routing.manifest import Manifest, parse_manifest
from proxy.server.app import build_public_app
from proxy.server.gateway import Gateway
from proxy.settings import load_settings
from proxy.store.routes import ModuleApplyResult, apply_manifest, load_modules
from tests.support.gateway import MODULE_ID
from tests.support.polling import eventually
from tests.support.process import run_cli

TABLE = "mod_6f1c2a9e_products"  # ctx.db's name for table 'products' of MODULE_ID
CREATE_TABLE = f"""
CREATE TABLE {TABLE} (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  site_id UUID NOT NULL,
  title VARCHAR(200) NOT NULL,
  notes TEXT,
  price NUMERIC(10, 2),
  stock INTEGER,
  active BOOLEAN,
  tags TEXT[],
  attrs JSONB,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW()
)
"""
FIELDS = [
    {"name": "id", "type": "uuid", "readonly": True},
    {"name": "title", "type": "string", "required": True},
    {"name": "notes", "type": "text"},
    {"name": "price", "type": "decimal"},
    {"name": "stock", "type": "integer"},
    {"name": "active", "type": "boolean"},
    {"name": "tags", "type": "array"},
    {"name": "attrs", "type": "object"},
    {"name": "created_at", "type": "timestamp", "readonly": True},
    {"name": "updated_at", "type": "timestamptz", "readonly": True},
]
PRODUCTS = {"name": "products", "fields": FIELDS, "filters": ["price"], "sortable": ["price"]}


def shop(*entities: dict[str, Any], **module: Any) -> Manifest:
    return parse_manifest(
        {"modules": [{"id": MODULE_ID, "name": "shop", "entities": list(entities), **module}]}
    )


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    await conn.execute(CREATE_TABLE)
    yield conn
    await conn.close()


async def test_entities_round_trip_and_reapply_writes_nothing(conn: asyncpg.Connection) -> None:
    manifest = shop(PRODUCTS, {**PRODUCTS, "name": "items", "table": "products"})
    assert await apply_manifest(conn, manifest) == [ModuleApplyResult(MODULE_ID, 0, 0, 2, 0)]
    (loaded,) = await load_modules(conn)
    # Read in name order; the same entities as the manifest's.
    assert loaded.entities == tuple(sorted(manifest.modules[0].entities, key=lambda e: e.name))
    assert await apply_manifest(conn, manifest) == [ModuleApplyResult(MODULE_ID, 0, 0, 0, 0)]

    changed = shop({**PRODUCTS, "operations": ["list", "read"]})
    assert await apply_manifest(conn, changed) == [ModuleApplyResult(MODULE_ID, 0, 0, 1, 1)]
    (loaded,) = await load_modules(conn, [MODULE_ID])
    assert loaded.entities == changed.modules[0].entities


async def test_the_tables_created_at_and_updated_at_become_readonly_fields(
    conn: asyncpg.Connection,
) -> None:
    # "when the table has it": the pool sees only the stored entity, so apply adds them.
    await conn.execute(f"ALTER TABLE {TABLE} ALTER COLUMN updated_at TYPE timestamp")
    entity = {"name": "products", "fields": FIELDS[:2], "sortable": ["title"]}
    await apply_manifest(conn, shop(entity))
    (loaded,) = await load_modules(conn)
    assert [f.as_json() for f in loaded.entities[0].fields[2:]] == [
        {"name": "created_at", "type": "timestamptz", "required": False, "readonly": True,
         "hidden": False},
        {"name": "updated_at", "type": "timestamp", "required": False, "readonly": True,
         "hidden": False},
    ]  # fmt: skip
    # Declared ones are kept as declared; a column of another type is no timestamp to add.
    await conn.execute(f"ALTER TABLE {TABLE} ALTER COLUMN updated_at TYPE text")
    declared = {**entity, "fields": [*FIELDS[:2], {"name": "created_at", "type": "timestamptz"}]}
    await apply_manifest(conn, shop(declared))
    (loaded,) = await load_modules(conn)
    assert loaded.entities == shop(declared).modules[0].entities


async def test_a_row_that_does_not_validate_is_left_out(
    conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    await apply_manifest(conn, shop(PRODUCTS))
    await conn.execute(
        "INSERT INTO module_entities (module_id, name, config) VALUES ($1, 'bad', $2::jsonb)",
        MODULE_ID,
        '{"name": "bad", "fields": [{"name": "x", "type": "money"}]}',
    )
    with caplog.at_level(logging.ERROR, logger="modgate.store"):
        (loaded,) = await load_modules(conn)
    assert [e.name for e in loaded.entities] == ["products"]
    assert [r.getMessage() for r in caplog.records] == [
        "entity left out, its routes are not served: module_entities: module_entities row "
        f"({MODULE_ID}, bad).fields[0].type: expected one of uuid, string, text, integer, "
        "number, decimal, boolean, timestamp, timestamptz, array, jsonb, object, got 'money'"
    ]


@pytest.mark.parametrize(
    ("entity", "table_sql", "message"),
    [
        (
            {**PRODUCTS, "table": "items"},
            None,
            "module shop: entity 'products': table mod_6f1c2a9e_items does not exist (ctx.db's "
            "table 'items' of this module)",
        ),
        (
            {"name": "products", "fields": [{"name": "title", "type": "string"}]},
            f"ALTER TABLE {TABLE} DROP COLUMN site_id",
            f"module shop: entity 'products': table {TABLE} has no site_id column",
        ),
        (
            {"name": "products", "fields": [{"name": "title", "type": "string"}]},
            f"ALTER TABLE {TABLE} DROP COLUMN id",
            f"module shop: entity 'products': table {TABLE} has no id column (read, update and "
            "delete find rows by id; a list's cursor orders by it)",
        ),
        (
            {"name": "products", "fields": [{"name": "colour", "type": "string"}]},
            None,
            f"module shop: entity 'products': field 'colour': table {TABLE} has no such column",
        ),
        (
            {
                "name": "products",
                "fields": [
                    {"name": "title", "type": "integer"},
                    {"name": "price", "type": "string"},
                    {"name": "attrs", "type": "array"},
                    {"name": "stock", "type": "boolean"},
                ],
            },
            None,
            f"module shop: entity 'products': field 'title' is integer, but column {TABLE}.title "
            "is character varying(200); "
            f"module shop: entity 'products': field 'price' is string, but column {TABLE}.price "
            "is numeric(10,2); "
            f"module shop: entity 'products': field 'stock' is boolean, but column "
            f"{TABLE}.stock is integer",
        ),
        (
            {
                "name": "products",
                "operations": ["list"],
                "fields": [
                    {"name": "title", "type": "string"},
                    {"name": "created_at", "type": "timestamp"},
                    {"name": "updated_at", "type": "timestamptz"},
                ],
            },
            f"ALTER TABLE {TABLE} ALTER COLUMN created_at TYPE text, "
            "ALTER COLUMN updated_at TYPE timestamp",
            f"module shop: entity 'products': field 'created_at' is timestamp, but column "
            f"{TABLE}.created_at is text; "
            f"module shop: entity 'products': field 'updated_at' is timestamptz, but column "
            f"{TABLE}.updated_at is timestamp without time zone",
        ),
    ],
    ids=["no-table", "no-site-id", "no-id", "no-column", "wrong-types", "not-timestamps"],
)
async def test_apply_checks_entities_against_the_database(
    conn: asyncpg.Connection, entity: dict[str, Any], table_sql: str | None, message: str
) -> None:
    if table_sql is not None:
        await conn.execute(table_sql)
    with pytest.raises(ManifestError) as caught:
        await apply_manifest(conn, shop(entity))
    assert str(caught.value) == message
    # Refused before anything is written.
    assert await conn.fetchval("SELECT count(*) FROM modgate_modules") == 0
    assert await conn.fetchval("SELECT count(*) FROM module_entities") == 0


async def test_every_entity_needs_an_id_column(conn: asyncpg.Connection) -> None:
    # A list's keyset cursor breaks ties by id, so even list and create alone need it.
    await conn.execute(f"ALTER TABLE {TABLE} DROP COLUMN id")
    entity = {"name": "products", "operations": ["list", "create"], "fields": FIELDS[1:3]}
    with pytest.raises(ManifestError) as caught:
        await apply_manifest(conn, shop(entity))
    assert str(caught.value) == (
        f"module shop: entity 'products': table {TABLE} has no id column (read, update and "
        "delete find rows by id; a list's cursor orders by it)"
    )


async def test_entity_changes_change_a_live_gateways_routes(
    conn: asyncpg.Connection, database: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    static = {"path": "/v", "method": "GET", "handler_type": "static", "handler_code": '"v"',
              "requires_auth": False}  # fmt: skip
    await apply_manifest(conn, shop(routes=[static]))
    (tmp_path / "gw.yaml").write_text("{}\n")
    settings = load_settings(
        str(tmp_path / "gw.yaml"),
        environ={},
        overrides={"database_url": database, "rate_limit_enabled": False,
                   "request_log_enabled": False, "access_log": False},
    )  # fmt: skip
    gateway = Gateway(settings)
    client = await aiohttp_client(build_public_app(gateway))
    await eventually(lambda: gateway.ready, what="the gateway is ready")

    async def status(method: str, path: str) -> tuple[int, str]:
        r = await client.request(method, f"/api/modules/shop{path}")
        return r.status, (await r.json())["code"]

    assert await status("GET", "/products") == (404, "route_not_found")
    await apply_manifest(conn, shop(PRODUCTS, routes=[static]))
    # Generated and authenticated like any route: 401 without credentials, not 404.
    await eventually(lambda: status("GET", "/products"), until=lambda s: s[0] == 401,
                     what="the entity's routes")  # fmt: skip
    assert await status("DELETE", "/products/7") == (401, "unauthorized")

    await apply_manifest(conn, shop({**PRODUCTS, "operations": ["list"]}, routes=[static]))
    await eventually(lambda: status("DELETE", "/products/7"), until=lambda s: s[0] == 404,
                     what="the entity's delete route is gone")  # fmt: skip
    assert await status("GET", "/products") == (401, "unauthorized")
    # A plain SQL writer invalidates too (the trigger, not apply_manifest, sends the NOTIFY).
    await conn.execute("DELETE FROM module_entities")
    await eventually(lambda: status("GET", "/products"), until=lambda s: s[0] == 404,
                     what="the entity is gone")  # fmt: skip
    assert (await client.get("/api/modules/shop/v")).status == 200


async def test_routes_apply_refuses_a_missing_table_naming_it(
    database: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "routes.yaml"
    manifest.write_text(
        yaml.safe_dump({"modules": [{"id": MODULE_ID, "name": "shop", "entities": [PRODUCTS]}]})
    )
    code, out = await run_cli("routes", "check", "-f", str(manifest))
    assert (code, out.strip()) == (0, f"{manifest}: 1 modules, 0 routes, 1 entities, no conflicts")
    env = {"MODGATE_DATABASE_URL": database}
    code, out = await run_cli("routes", "apply", "-f", str(manifest), env=env)
    assert (code, out.strip()) == (
        2,
        f"modgate: error: module shop: entity 'products': table {TABLE} does not exist (ctx.db's "
        "table 'products' of this module)",
    )
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(CREATE_TABLE)
    finally:
        await conn.close()
    code, out = await run_cli("routes", "apply", "-f", str(manifest), env=env)
    assert (code, out.strip()) == (
        0,
        f"module {MODULE_ID}: 0 routes upserted, 0 deactivated, 1 entities upserted, 0 removed",
    )
