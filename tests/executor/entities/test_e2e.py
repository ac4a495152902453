"""Entities end to end, as a user drives them (issue 16): a module table in a migrated Postgres,
`modgate routes apply -f` of a manifest with `entities:`, `modgate keys create`, a real
`modgate executor` and a real `modgate serve`, then the seed's REST API over HTTP: CRUD,
pagination, filters, search, the cursor, every error status, and a live route change; and API
consumers made by `modgate consumers create` calling it (scopes, allowed endpoints, revocation
by `modgate consumers revoke`, ctx.consumer, the seed's module_api_requests)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml

from tests.support.gateway import MODULE_ID
from tests.support.polling import eventually
from tests.support.process import MODGATE, ServeProcess, free_port, run_cli
from tests.support.shop import CREATE_PRODUCTS, PRODUCTS_TABLE, shop_manifest

SITE_A = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"
SITE_B = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
AGENCY = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
TABLE = PRODUCTS_TABLE
CREATE_TABLE = CREATE_PRODUCTS + f"CREATE INDEX ON {TABLE} (site_id, created_at DESC, id DESC);\n"
VISIBLE = {"id", "name", "sku", "price", "status", "created_at", "updated_at"}


@dataclass
class Shop:
    url: str  # the module's base URL on the gateway
    keys: dict[str, str]  # key role -> key
    env: dict[str, str]
    manifest: Path


async def _create_key(env: dict[str, str], site: str, name: str, *scopes: str) -> str:
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    code, out = await run_cli(
        "keys", "create", "--module", MODULE_ID, "--site", site, "--agency", AGENCY,
        "--name", name, *scope_args, "--json", env=env,
    )  # fmt: skip
    assert code == 0, out
    return str(json.loads(out)["key"])


async def _create_consumer(env: dict[str, str], site: str, name: str, *flags: str) -> Any:
    """`modgate consumers create ... --json`: its object (with `id` and the `key`)."""
    code, out = await run_cli(
        "consumers", "create", "--module", MODULE_ID, "--site", site, "--name", name, *flags,
        "--json", env=env,
    )  # fmt: skip
    assert code == 0, out
    return json.loads(out)


async def _list_consumers(env: dict[str, str], *flags: str) -> dict[str, Any]:
    """`modgate consumers list --module M --json`, by id."""
    code, out = await run_cli("consumers", "list", "--module", MODULE_ID, *flags, "--json", env=env)
    assert code == 0, out
    return {c["id"]: c for c in json.loads(out)}


@pytest.fixture
async def shop(database: str, tmp_path: Path) -> AsyncIterator[Shop]:
    token = secrets.token_hex(16)
    env = {"MODGATE_DATABASE_URL": database, "MODGATE_EXECUTOR_TOKEN": token}
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(CREATE_TABLE)
    finally:
        await conn.close()
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(shop_manifest(), sort_keys=False))
    code, out = await run_cli("routes", "apply", "-f", str(path), env=env)
    assert (code, out.strip()) == (
        0,
        f"module {MODULE_ID}: 0 routes upserted, 0 deactivated, 1 entities upserted, 0 removed",
    )
    full = ("read:products", "write:products", "delete:products")
    keys = {
        "a": await _create_key(env, SITE_A, "shop a", *full),
        "b": await _create_key(env, SITE_B, "shop b", *full),
        "reader": await _create_key(env, SITE_A, "shop reader", "read:products"),
    }

    port = free_port()
    executor = await asyncio.create_subprocess_exec(
        MODGATE, "executor",
        env={**os.environ, **env, "MODGATE_EXECUTOR_LISTEN": f"127.0.0.1:{port}",
             "MODGATE_EXECUTOR_WORKERS": "1"},
        cwd=str(tmp_path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    gateway = ServeProcess(env={**env, "MODGATE_EXECUTOR_URL": f"http://127.0.0.1:{port}"})
    try:
        async with aiohttp.ClientSession() as s:

            async def pool_ready() -> bool:
                assert executor.returncode is None, "modgate executor exited early"
                async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                    return r.status == 200

            await eventually(pool_ready, timeout=30, interval=0.05, ignore=(aiohttp.ClientError,),
                             what="modgate executor's /readyz answers 200")  # fmt: skip
        await gateway.start()
        yield Shop(f"{gateway.url}/api/modules/shop", keys, env, path)
    finally:
        await gateway.stop()
        if executor.returncode is None:
            executor.terminate()
            try:
                await asyncio.wait_for(executor.wait(), 20)
            except TimeoutError:
                executor.kill()
                await executor.wait()


class Client:
    """curl, for one key (sent as X-API-Key, or as a Bearer token with `bearer`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        key: str | None,
        *,
        bearer: bool = False,
    ) -> None:
        self.session, self.base = session, base
        self.headers: dict[str, str] = {}
        if key:
            self.headers = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}

    async def __call__(
        self, method: str, path: str, *, json: Any = None, params: Any = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.base + path, json=json, params=params, headers=self.headers
        ) as r:
            assert r.headers["Content-Type"].startswith("application/json"), await r.text()
            return r.status, await r.json()


def _no_hidden(body: Any) -> None:
    rows = body["data"] if isinstance(body["data"], list) else [body["data"]]
    for row in rows:
        assert set(row) == VISIBLE, row


async def test_rest_api_end_to_end(shop: Shop) -> None:
    async with aiohttp.ClientSession() as session:
        a = Client(session, shop.url, shop.keys["a"])
        b = Client(session, shop.url, shop.keys["b"])

        # Create: 201, readonly and hidden fields and site_id not written from input.
        status, created = await a(
            "POST", "/products",
            json={"name": "Green tea", "sku": "TEA-1", "price": 4.5, "status": "live",
                  "cost": 99, "site_id": SITE_B},
        )  # fmt: skip
        assert status == 201, created
        _no_hidden(created)
        lamp = created["data"]
        assert (lamp["name"], lamp["sku"], lamp["price"], lamp["status"]) == (
            "Green tea", "TEA-1", 4.5, "draft",
        )  # fmt: skip
        conn = await asyncpg.connect(shop.env["MODGATE_DATABASE_URL"])
        try:
            row = await conn.fetchrow(f"SELECT site_id::text, cost FROM {TABLE}")
        finally:
            await conn.close()
        assert (row["site_id"], str(row["cost"])) == (SITE_A, "1.50")

        # Read.
        status, read = await a("GET", f"/products/{lamp['id']}")
        assert (status, read) == (200, created)

        # 24 more rows, then a list with page, limit, sort, filter and search.
        for i in range(24):
            status, _ = await a(
                "POST", "/products", json={"name": f"Item {i:02d}", "sku": f"SKU-{i:02d}",
                                           "price": i},
            )  # fmt: skip
            assert status == 201
        status, listed = await a("GET", "/products")
        assert status == 200
        _no_hidden(listed)
        assert len(listed["data"]) == 20
        assert listed["data"][0]["name"] == "Item 23"  # created_at descending by default
        assert {k: v for k, v in listed["pagination"].items() if k != "next_cursor"} == {
            "page": 1, "limit": 20, "total": 25, "totalPages": 2,
        }  # fmt: skip
        assert isinstance(listed["pagination"]["next_cursor"], str)

        page_2 = {"page": "2", "limit": "10", "sort": "price", "order": "asc"}
        status, page2 = await a("GET", "/products", params=page_2)
        assert status == 200
        # Prices 0..23 and 4.5: the second ten in ascending order.
        assert [p["price"] for p in page2["data"]] == list(range(9, 19))
        assert page2["pagination"]["page"] == 2 and page2["pagination"]["total"] == 25

        status, filtered = await a("GET", "/products", params={"price[gte]": "20", "sort": "price"})
        assert [p["price"] for p in filtered["data"]] == [23, 22, 21, 20]
        assert filtered["pagination"]["next_cursor"] is None
        status, filtered = await a("GET", "/products", params={"sku": "SKU-07"})
        assert [p["name"] for p in filtered["data"]] == ["Item 07"]
        status, filtered = await a("GET", "/products", params={"price[in]": "1,2,4.5"})
        assert sorted(p["price"] for p in filtered["data"]) == [1, 2, 4.5]
        status, found = await a("GET", "/products", params={"search": "TEA"})
        assert [p["name"] for p in found["data"]] == ["Green tea"]

        # Cursor continuation: every row once, in order, with a filter kept across pages.
        seen: list[Any] = []
        params: dict[str, str] = {"limit": "7", "sort": "price", "order": "asc",
                                  "price[lt]": "20"}  # fmt: skip
        pages = 0
        while True:
            status, got = await a("GET", "/products", params=params)
            assert status == 200, got
            pages += 1
            seen += [p["price"] for p in got["data"]]
            assert got["pagination"]["page"] == pages
            cursor = got["pagination"]["next_cursor"]
            if cursor is None:
                break
            params = {"limit": "7", "sort": "price", "order": "asc", "price[lt]": "20",
                      "cursor": cursor}  # fmt: skip
        assert seen == sorted([4.5, *range(20)]) and pages == 3
        # A cursor replayed with another sort is refused, not followed.
        status, body = await a("GET", "/products", params={"cursor": cursor or params["cursor"],
                                                           "sort": "name"})  # fmt: skip
        assert (status, body["details"]) == (
            400, ["cursor was made for another sort, order, search or filters"],
        )  # fmt: skip

        # Update: PATCH writes what it is sent; PUT replaces (price back to its default).
        path = f"/products/{lamp['id']}"
        status, patched = await a("PATCH", path, json={"price": "5.25", "status": "live"})
        assert status == 200, patched
        _no_hidden(patched)
        assert (patched["data"]["price"], patched["data"]["name"]) == (5.25, "Green tea")
        assert patched["data"]["status"] == "draft"
        assert patched["data"]["updated_at"] > lamp["updated_at"]
        status, put = await a("PUT", path, json={"name": "Black tea"})
        assert status == 200, put
        assert (put["data"]["name"], put["data"]["sku"], put["data"]["price"]) == (
            "Black tea", None, None,
        )  # fmt: skip

        # Another site's key sees, reads, changes and deletes none of site A's rows.
        status, theirs = await b("GET", "/products")
        assert (status, theirs["data"], theirs["pagination"]["total"]) == (200, [], 0)
        for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("PUT", {"name": "x"}),
                             ("DELETE", None)):  # fmt: skip
            status, answer = await b(method, path, json=body)
            assert (status, answer["code"]) == (404, "not_found"), method
        status, mine = await b("POST", "/products", json={"name": "B's own"})
        assert status == 201
        status, listed = await a("GET", "/products", params={"search": "own"})
        assert listed["data"] == []

        # Delete, then 404 for it and for an id nobody has.
        assert await a("DELETE", path) == (200, {"success": True})
        status, gone = await a("GET", path)
        assert (status, gone["code"]) == (404, "not_found") and "request_id" in gone
        status, gone = await a("DELETE", f"/products/{UNKNOWN_ID}")
        assert (status, gone["code"]) == (404, "not_found")

        # 400 validation_failed with details, through the gateway.
        status, bad = await a("POST", "/products", json={"price": "cheap"})
        assert (status, bad["code"], bad["details"]) == (
            400, "validation_failed", ["name is required", "price must be of type decimal"],
        )  # fmt: skip
        status, bad = await a("GET", "/products", params={"limit": "500", "colour": "red"})
        assert (status, bad["code"]) == (400, "validation_failed")
        assert bad["details"] == [
            "colour is not a query parameter of products",
            "limit must be an integer from 1 to 100, got '500'",
        ]
        status, bad = await a("GET", "/products/42")
        assert (status, bad["details"]) == (400, ["id must be a uuid, got '42'"])

        # 403 without the scope, 401 without a key.
        reader = Client(session, shop.url, shop.keys["reader"])
        assert (await reader("GET", "/products"))[0] == 200
        status, refused = await reader("POST", "/products", json={"name": "x"})
        assert (status, refused["code"]) == (403, "forbidden")
        status, refused = await reader("DELETE", f"/products/{mine['data']['id']}")
        assert status == 403
        assert (await Client(session, shop.url, None)("GET", "/products"))[0] == 401


async def test_removing_an_operation_takes_its_route_away_live(shop: Shop) -> None:
    async with aiohttp.ClientSession() as session:
        a = Client(session, shop.url, shop.keys["a"])
        status, created = await a("POST", "/products", json={"name": "Kettle"})
        assert status == 201
        path = f"/products/{created['data']['id']}"

        async def delete_unknown() -> tuple[int, str, str | None]:
            async with session.delete(f"{shop.url}/products/{UNKNOWN_ID}", headers=a.headers) as r:
                return r.status, (await r.json())["code"], r.headers.get("Allow")

        # While the route exists, an unknown id is the pool's 404.
        assert (await delete_unknown())[:2] == (404, "not_found")

        shop.manifest.write_text(
            yaml.safe_dump(shop_manifest(["list", "read", "create", "update"]), sort_keys=False)
        )
        code, out = await run_cli("routes", "apply", "-f", str(shop.manifest), env=shop.env)
        assert (code, out.strip()) == (
            0,
            f"module {MODULE_ID}: 0 routes upserted, 0 deactivated, 1 entities upserted, 0 removed",
        )
        # Once the NOTIFY arrives, the method has no route on that path: 405 with the methods
        # left, no restart.
        answer = await eventually(
            delete_unknown,
            until=lambda answer: answer[0] != 404,
            what="DELETE is gone from the running gateway",
        )
        assert answer[:2] == (405, "method_not_allowed"), answer
        assert answer[2] is not None and "DELETE" not in answer[2]
        assert (await a("GET", path))[0] == 200  # the row is still there


WHOAMI = {
    "path": "/whoami",
    "method": "GET",
    "handler_type": "function",
    "handler_code": "return { consumer: ctx.consumer, site: ctx.site, user: ctx.user };",
}


async def test_api_consumers_end_to_end(shop: Shop) -> None:
    """Consumers made by `modgate consumers create` call the REST API by Bearer or X-API-Key:
    scopes, allowed endpoints, site binding, live revocation by `modgate consumers revoke`,
    ctx.consumer in a function handler, and the seed's module_api_requests."""
    # A function route beside the entity, to see what the handler pool is told of its caller.
    shop.manifest.write_text(yaml.safe_dump(shop_manifest(routes=[WHOAMI]), sort_keys=False))
    code, out = await run_cli("routes", "apply", "-f", str(shop.manifest), env=shop.env)
    assert (code, out.strip()) == (
        0,
        f"module {MODULE_ID}: 1 routes upserted, 0 deactivated, 0 entities upserted, 0 removed",
    )  # the entity is unchanged

    env = shop.env
    app = await _create_consumer(env, SITE_A, "storefront", "--scope", "read", "--scope", "write")
    reporting = await _create_consumer(env, SITE_A, "reporting")  # the default scope: read
    feed = await _create_consumer(
        env, SITE_A, "catalog feed", "--scope", "read", "--allowed-endpoint", "GET /products"
    )
    other_site = await _create_consumer(env, SITE_B, "site b app", "--scope", "admin")
    for consumer in (app, reporting, feed, other_site):
        assert consumer["key"].startswith("dk_") and len(consumer["key"]) == 46, consumer
    listed = await _list_consumers(env)
    assert {i: (c["name"], c["site_id"], c["key_prefix"], c["scopes"], c["is_active"])
            for i, c in listed.items()} == {
        app["id"]: ("storefront", SITE_A, app["key"][:12], ["read", "write"], True),
        reporting["id"]: ("reporting", SITE_A, reporting["key"][:12], ["read"], True),
        feed["id"]: ("catalog feed", SITE_A, feed["key"][:12], ["read"], True),
        other_site["id"]: ("site b app", SITE_B, other_site["key"][:12], ["admin"], True),
    }  # fmt: skip

    async with aiohttp.ClientSession() as session:
        bearer = Client(session, shop.url, app["key"], bearer=True)
        header = Client(session, shop.url, app["key"])

        async def whoami_ready() -> int:
            async with session.get(f"{shop.url}/whoami", headers=bearer.headers) as r:
                return r.status

        await eventually(whoami_ready, until=lambda st: st == 200, what="GET /whoami is routed")

        # The same key as a Bearer token (what the seed's SDKs send) and as X-API-Key.
        status, created = await bearer("POST", "/products", json={"name": "Oolong", "price": 7})
        assert status == 201, created
        _no_hidden(created)
        row_path = f"/products/{created['data']['id']}"
        assert await header("GET", row_path) == (200, created)
        status, page = await header("GET", "/products")
        assert (status, [p["name"] for p in page["data"]]) == (200, ["Oolong"])
        status, patched = await bearer("PATCH", row_path, json={"price": "7.5"})
        assert (status, patched["data"]["price"]) == (200, 7.5)
        # `write` is not `delete`.
        status, refused = await bearer("DELETE", row_path)
        assert (status, refused["error"]) == (403, "Missing scope: delete:products")

        # The handler pool is told which consumer calls: ctx.consumer (null for a module key).
        assert await bearer("GET", "/whoami") == (
            200, {"consumer": {"id": app["id"]}, "site": {"id": SITE_A}, "user": None},
        )  # fmt: skip
        module_key = Client(session, shop.url, shop.keys["a"])
        assert await module_key("GET", "/whoami") == (
            200, {"consumer": None, "site": {"id": SITE_A}, "user": None},
        )  # fmt: skip

        # A `read` consumer lists and reads, and is refused a create.
        reader = Client(session, shop.url, reporting["key"], bearer=True)
        status, page = await reader("GET", "/products")
        assert (status, page["pagination"]["total"]) == (200, 1)
        assert (await reader("GET", row_path))[0] == 200
        status, refused = await reader("POST", "/products", json={"name": "x"})
        assert (status, refused["code"], refused["error"]) == (
            403, "forbidden", "Missing scope: write:products",
        )  # fmt: skip

        # allowed_endpoints 'GET /products': the list, not the read by id.
        narrow = Client(session, shop.url, feed["key"])
        assert (await narrow("GET", "/products"))[0] == 200
        status, refused = await narrow("GET", row_path)
        assert (status, refused["code"], refused["error"]) == (
            403, "forbidden", "This API consumer is not allowed to call this endpoint",
        )  # fmt: skip

        # A consumer is bound to its site: admin on site B sees none of site A's rows.
        theirs = Client(session, shop.url, other_site["key"], bearer=True)
        status, page = await theirs("GET", "/products")
        assert (status, page["data"], page["pagination"]["total"]) == (200, [], 0)
        status, missing = await theirs("GET", row_path)
        assert (status, missing["code"]) == (404, "not_found")

        # Revocation by the CLI reaches the running gateway (NOTIFY), no restart.
        code, out = await run_cli("consumers", "revoke", reporting["id"], env=env)
        assert code == 0 and out.startswith(f"revoked {reporting['id']}"), out
        await eventually(
            lambda: reader("GET", "/products"), until=lambda answer: answer[0] == 401,
            what="the revocation reached the gateway",
        )  # fmt: skip
        assert (await reader("GET", row_path))[0] == 401
        assert (await header("GET", row_path))[0] == 200  # the others are untouched
        code, out = await run_cli("consumers", "revoke", reporting["id"], env=env)
        assert code == 1, out  # no active consumer left with that id
        assert reporting["id"] not in await _list_consumers(env)
        assert (await _list_consumers(env, "--all"))[reporting["id"]]["is_active"] is False

    # What each consumer called, in the seed's module_api_requests, once the log flushes.
    expected = [
        ("POST", "/products", 201),
        ("GET", row_path, 200),
        ("GET", "/products", 200),
        ("PATCH", row_path, 200),
        ("DELETE", row_path, 403),
        ("GET", "/whoami", 200),
        ("GET", row_path, 200),
    ]
    conn = await asyncpg.connect(env["MODGATE_DATABASE_URL"])
    try:

        async def requests_of(consumer_id: str) -> list[tuple[str, str, int]]:
            rows = await conn.fetch(
                "SELECT method, path, status_code FROM module_api_requests"
                " WHERE consumer_id = $1 ORDER BY created_at, id",
                consumer_id,
            )
            return [(r["method"], r["path"], r["status_code"]) for r in rows]

        # The app's rows: its /whoami polls first (200 once routed), then the calls above.
        app_rows = await eventually(
            lambda: requests_of(app["id"]),
            until=lambda rows: rows[-len(expected):] == expected,
            what="the storefront consumer's requests in module_api_requests",
        )  # fmt: skip
        assert {row for row in app_rows[: -len(expected)]} <= {
            ("GET", "/whoami", 200),
            ("GET", "/whoami", 404),
        }
        feed_rows = await eventually(lambda: requests_of(feed["id"]), until=lambda r: len(r) == 2)
        assert feed_rows == [("GET", "/products", 200), ("GET", row_path, 403)]
        # The revoked consumer's rows end with its refused create; its 401s after revocation
        # are no consumer's (the key no longer names one).
        reporting_rows = await eventually(
            lambda: requests_of(reporting["id"]),
            until=lambda rows: ("POST", "/products", 403) in rows,
        )
        assert reporting_rows[:3] == [
            ("GET", "/products", 200), ("GET", row_path, 200), ("POST", "/products", 403),
        ]  # fmt: skip
        assert set(reporting_rows[3:]) <= {("GET", "/products", 200)}  # polls before NOTIFY
        assert await conn.fetchval(
            "SELECT count(*) FROM module_api_logs WHERE consumer_id = $1 AND auth_type ="
            " 'consumer' AND site_id = $2 AND api_key_id IS NULL",
            app["id"], SITE_A,
        ) == len(app_rows)  # fmt: skip
    finally:
        await conn.close()
