"""The seed's CRM example, handler code verbatim, through a running gateway and executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from proxy.routing.manifest import parse_manifest
from proxy.store.keys import create_key
from proxy.store.routes import apply_manifest
from tests.executor.seed_crm import CREATE, DELETE, GET, LIST, UPDATE
from tests.support.gateway import serve_database_with_pool

CRM = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"
SITE_A = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"
SITE_B = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
AGENCY = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"

# The EM-12 seed's CRM routes, handler code exactly as the seed registers it.
SEED_ROUTES = [
    ("/contacts", "GET", "List contacts", LIST, ["read:contacts"]),
    ("/contacts/:id", "GET", "Get contact by ID", GET, ["read:contacts"]),
    ("/contacts", "POST", "Create contact", CREATE, ["write:contacts"]),
    ("/contacts/:id", "PUT", "Update contact", UPDATE, ["write:contacts"]),
    ("/contacts/:id", "DELETE", "Delete contact", DELETE, ["delete:contacts"]),
]

HOSTILE_ROUTES = {
    "/noop": "return 1;",
    "/loop": "while (true) {}",
    "/bomb": "const a = []; while (true) { a.push(new Array(1e6).fill(1)); }",
    "/throws": "throw new Error('handler says no');",
    "/broken": "return {{{;",
    "/escape": """
      const probes = {
        require: typeof require, process: typeof process, fetch: typeof fetch,
        evalRequire: typeof eval('typeof require === "undefined" ? undefined : require'),
        fnProcess: typeof Function('return this')().process,
        // __timer_manager is mini-racer's own (setTimeout); nothing of modgate's is reachable.
        globals: Object.getOwnPropertyNames(globalThis)
          .filter(n => n.startsWith('__') && n !== '__timer_manager'),
      };
      return probes;
    """,
}


@pytest.fixture
async def crm(database: str) -> dict[str, str]:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "CREATE TABLE mod_6f1c2a9e_contacts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
            " site_id uuid NOT NULL, name text NOT NULL, email text,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        routes = [
            {
                "path": p,
                "method": m,
                "summary": s,
                "handler_type": "function",
                "handler_code": code,
                "required_scopes": scopes,
            }
            for p, m, s, code, scopes in SEED_ROUTES
        ] + [
            {
                "path": p,
                "method": "GET",
                "handler_type": "function",
                "handler_code": code,
                "requires_auth": False,
            }
            for p, code in HOSTILE_ROUTES.items()
        ]
        routes.append(
            {
                "path": "/static",
                "method": "GET",
                "handler_type": "static",
                "handler_code": "1",
                "requires_auth": False,
            }
        )
        await apply_manifest(
            conn, parse_manifest({"modules": [{"id": CRM, "name": "crm", "routes": routes}]})
        )
        keys = {}
        for site in (SITE_A, SITE_B):
            _, keys[site] = await create_key(
                conn,
                module_id=CRM,
                site_id=site,
                agency_id=AGENCY,
                name=f"crm {site[:4]}",
                scopes=["read:contacts", "write:contacts", "delete:contacts"],
            )
    finally:
        await conn.close()
    return keys


@pytest.fixture
async def clients(
    database: str, crm: dict[str, str], aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> Any:
    client, _ = await serve_database_with_pool(
        aiohttp_client, aiohttp_server, tmp_path, database,
        executor_timeout_seconds=0.5, executor_memory_mb=32,
    )  # fmt: skip
    return client


async def test_seed_crm_routes_work_unchanged(clients: Any, crm: dict[str, str]) -> None:
    a = {"X-API-Key": crm[SITE_A]}
    r = await clients.post(
        "/api/modules/crm/contacts", json={"name": "Ada", "email": "ada@example.com"}, headers=a
    )
    assert r.status == 200, await r.text()
    created = await r.json()
    assert created["name"] == "Ada" and created["site_id"] == SITE_A
    contact = f"/api/modules/crm/contacts/{created['id']}"

    r = await clients.get("/api/modules/crm/contacts", headers=a)
    assert [c["name"] for c in (await r.json())["contacts"]] == ["Ada"]
    r = await clients.get(contact, headers=a)
    assert (await r.json())["email"] == "ada@example.com"
    r = await clients.put(contact, json={"email": "ada@new.example"}, headers=a)
    assert r.status == 200 and (await r.json())["email"] == "ada@new.example"

    # Another site's key sees none of it, and cannot change or delete it.
    b = {"X-API-Key": crm[SITE_B]}
    assert (await (await clients.get("/api/modules/crm/contacts", headers=b)).json()) == {
        "contacts": []
    }
    r = await clients.get(contact, headers=b)
    assert r.status == 404 and (await r.json())["code"] == "not_found"
    r = await clients.put(contact, json={"name": "Mallory"}, headers=b)
    assert r.status == 404
    assert (await clients.delete(contact, headers=b)).status == 200  # deletes nothing
    assert (await (await clients.get(contact, headers=a)).json())["name"] == "Ada"

    r = await clients.delete(contact, headers=a)
    assert (r.status, await r.json()) == (200, {"success": True})
    r = await clients.get(contact, headers=a)
    assert r.status == 404
    body = await r.json()
    assert body["code"] == "not_found" and "request_id" in body


async def test_a_forged_site_id_is_overwritten(clients: Any, crm: dict[str, str]) -> None:
    r = await clients.post(
        "/api/modules/crm/contacts",
        json={"name": "Eve", "site_id": SITE_B},
        headers={"X-API-Key": crm[SITE_A]},
    )
    assert (await r.json())["site_id"] == SITE_A


async def test_malformed_json_and_scopes(clients: Any, crm: dict[str, str]) -> None:
    a = {"X-API-Key": crm[SITE_A], "Content-Type": "application/json"}
    r = await clients.post("/api/modules/crm/contacts", data=b"{not json", headers=a)
    assert r.status == 400 and (await r.json())["code"] == "bad_request"
    r = await clients.get("/api/modules/crm/contacts")
    assert r.status == 401


async def test_hostile_handlers(clients: Any) -> None:
    r = await clients.get("/api/modules/crm/loop")
    assert (r.status, (await r.json())["code"]) == (504, "handler_timeout")
    r = await clients.get("/api/modules/crm/bomb")
    assert (r.status, (await r.json())["code"]) == (500, "handler_memory_exceeded")
    r = await clients.get("/api/modules/crm/throws")
    body = await r.json()
    assert (r.status, body["code"], body["error"]) == (500, "handler_error", "handler says no")
    assert "at " not in body["error"]  # no stack trace
    r = await clients.get("/api/modules/crm/broken")
    assert (r.status, (await r.json())["code"]) == (500, "handler_invalid")
    r = await clients.get("/api/modules/crm/escape")
    probes = await r.json()
    assert probes["require"] == probes["process"] == probes["fetch"] == "undefined"
    assert probes["evalRequire"] == probes["fnProcess"] == "undefined"
    assert probes["globals"] == []
    # The pool is still healthy after all that.
    r = await clients.get("/api/modules/crm/escape")
    assert r.status == 200


async def test_repeated_calls_keep_answering(clients: Any, crm: dict[str, str]) -> None:
    # The per-call figures (p50 / p99 of these routes) are bench/crm_bench.py's.
    a = {"X-API-Key": crm[SITE_A]}
    for _ in range(20):  # isolates and compiled handlers are reused from the second call on
        r = await clients.get("/api/modules/crm/static")
        assert (r.status, await r.json()) == (200, 1)
        r = await clients.get("/api/modules/crm/noop")
        assert (r.status, await r.json()) == (200, 1)
        r = await clients.get("/api/modules/crm/contacts", headers=a)
        assert (r.status, await r.json()) == (200, {"contacts": []})
