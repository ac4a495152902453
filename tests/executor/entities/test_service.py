"""Entity calls through the executor's own app (POST /v1/execute, in process, real Postgres):
the seed's shapes and statuses, the error shape with `details`, and 503 without a database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from proxy.executor.service import Executor, build_executor_app
from proxy.settings import load_settings
from tests.executor.entities.products import SCHEMA_SQL, SITE_B, payload


async def executor_client(aiohttp_client: Any, tmp_path: Path, **overrides: Any) -> Any:
    (tmp_path / "ex.yaml").write_text("{}\n")
    settings = load_settings(str(tmp_path / "ex.yaml"), environ={}, overrides=overrides)
    return await aiohttp_client(build_executor_app(Executor(settings)))


@pytest.fixture
async def client(database: str, aiohttp_client: Any, tmp_path: Path) -> Any:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(SCHEMA_SQL)
    finally:
        await conn.close()
    return await executor_client(aiohttp_client, tmp_path, database_url=database)


async def post(client: Any, call: dict[str, Any]) -> tuple[int, Any]:
    r = await client.post("/v1/execute", json=call, headers={"X-Request-ID": "req-1"})
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-Request-ID"] == "req-1"
    return r.status, await r.json()


async def test_rest_crud_through_the_pool(client: Any) -> None:
    status, created = await post(client, payload("create", body={"name": "Lamp", "price": 5}))
    assert status == 201 and created["data"]["name"] == "Lamp" and "secret" not in created["data"]
    row_id = created["data"]["id"]
    assert await post(client, payload("read", row_id=row_id)) == (200, created)
    status, listed = await post(client, payload("list", query=[("search", "lam")]))
    assert status == 200 and listed["data"] == [created["data"]]
    assert listed["pagination"] == {
        "page": 1, "limit": 20, "total": 1, "totalPages": 1, "next_cursor": None,
    }  # fmt: skip
    status, updated = await post(
        client, payload("update", method="PUT", row_id=row_id, body={"name": "Lamp 2"})
    )
    assert status == 200 and updated["data"]["price"] is None and updated["data"]["updated_at"]
    assert await post(client, payload("delete", row_id=row_id)) == (200, {"success": True})
    assert await post(client, payload("read", row_id=row_id)) == (
        404,
        {"error": "Not found", "code": "not_found", "request_id": "req-1"},
    )


async def test_validation_failures_carry_details(client: Any) -> None:
    status, body = await post(
        client, payload("list", query=[("limit", "500"), ("colour", "red"), ("limit", "1")])
    )
    assert status == 400
    assert body == {
        "error": "Validation failed",
        "code": "validation_failed",
        "request_id": "req-1",
        "details": [
            "colour is not a query parameter of products",
            "limit is given more than once",
        ],
    }
    status, body = await post(client, payload("create", body={"price": "x"}))
    assert (status, body["details"]) == (400, ["name is required", "price must be of type decimal"])
    status, body = await post(client, payload("read", row_id="42"))
    assert (status, body["details"]) == (400, ["id must be a uuid, got '42'"])
    status, body = await post(
        client, payload("read", row_id="00000000-0000-4000-8000-000000000000", query=[("x", "1")])
    )
    assert (status, body["details"]) == (400, ["x is not a query parameter of read"])


async def test_refusals_by_postgres_name_the_field_never_the_detail(client: Any) -> None:
    status, _ = await post(client, payload("create", body={"name": "a", "sku": "S-1"}))
    assert status == 201
    # The other site's create of the same sku is fine: the constraint includes site_id.
    status, _ = await post(client, payload("create", site=SITE_B, body={"name": "a", "sku": "S-1"}))
    assert status == 201
    cases = [
        ({"name": "b", "sku": "S-1"}, ["sku already exists"]),
        ({"name": "b", "price": "1e400"}, ["price: numeric field overflow"]),
        ({"name": "b", "colour": "red"}, ["colour is not a field of products"]),
        ({"name": "b\x00"}, ["name must not contain the NUL character (\\u0000)"]),
    ]
    for body, details in cases:
        status, answer = await post(client, payload("create", body=body))
        assert (status, answer["code"], answer["details"]) == (400, "validation_failed", details)
        assert "S-1" not in str(answer)  # the conflicting value is never echoed
    status, answer = await post(client, payload("list", query=[("sku[like]", "S\\")]))
    assert (status, answer["details"]) == (
        400,
        ["sku[like]: a pattern must not end with a lone backslash (\\ escapes)"],
    )


async def test_a_malformed_entity_call_is_a_bad_request(client: Any) -> None:
    call = payload("list")
    call["entity"] = {"name": "products"}  # no fields
    status, body = await post(client, call)
    assert (status, body["code"]) == (400, "bad_request")
    del call["entity"]
    status, body = await post(client, call)
    assert (status, body["code"]) == (400, "bad_request")


async def test_without_a_database_entity_calls_answer_503(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await executor_client(aiohttp_client, tmp_path)
    status, body = await post(client, payload("list"))
    assert (status, body["code"]) == (503, "database_required")
