"""Authentication and authorization through the real pipeline, with keys in real Postgres."""

from __future__ import annotations

import asyncio
import time
import uuid
from functools import partial
from typing import Any

import asyncpg
import jwt as pyjwt
import pytest
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from proxy.auth.api_keys import generate_key
from proxy.routing.manifest import parse_manifest
from proxy.store.keys import create_key, revoke_key
from proxy.store.routes import apply_manifest
from tests.support.gateway import MODULE_ID, serve_database
from tests.support.polling import eventually

OTHER_ID = "0b7e9a52-6a8f-4c55-9d6c-0cbbd3f1d2aa"
SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"
AGENCY = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
SECRET = "test-secret-0123456789-abcdefghijklmnop"
APP = "https://app.example"


def _routes(upstream: str) -> dict[str, Any]:
    proxy = {"handler_type": "proxy"}
    return {
        "modules": [
            {
                "id": MODULE_ID,
                "name": "crm",
                "upstream": upstream,
                "routes": [
                    {"path": "/contacts/:id", "method": "GET", **proxy,
                     "required_scopes": ["read:contacts"]},
                    {"path": "/contacts", "method": "POST", **proxy,
                     "required_scopes": ["write:contacts"]},
                    {"path": "/pass-through", "method": "GET", **proxy,
                     "forward_credentials": True},
                    {"path": "/public", "method": "GET", **proxy, "requires_auth": False},
                ],
            },
            {
                "id": OTHER_ID,
                "name": "booking",
                "routes": [{"path": "/x", "method": "GET", "handler_type": "static",
                            "handler_code": '"booking"'}],
            },
        ]
    }  # fmt: skip


@pytest.fixture
async def seeded(database: str, upstream: tuple[str, Any]) -> str:
    conn = await asyncpg.connect(database)
    try:
        await apply_manifest(conn, parse_manifest(_routes(upstream[0])))
    finally:
        await conn.close()
    return database


@pytest.fixture
def start(seeded: str, aiohttp_client: Any, tmp_path: Any) -> Any:
    # `seeded` first: torn down last, so gateways stop before their database is dropped.
    async def start(**overrides: object) -> Any:
        settings = {"jwt_secret": SECRET, **overrides}
        client, gateway = await serve_database(aiohttp_client, tmp_path, seeded, **settings)
        client.gateway = gateway
        return client

    return start


async def _key(dsn: str, **fields: Any) -> tuple[str, str]:
    """Create a key as `modgate keys create` does; returns (key, key id)."""
    conn = await asyncpg.connect(dsn)
    try:
        values: dict[str, Any] = {
            "module_id": MODULE_ID, "site_id": SITE, "agency_id": AGENCY, "name": "test",
            "scopes": ["read:contacts"], **fields,
        }  # fmt: skip
        record, key = await create_key(conn, **values)
    finally:
        await conn.close()
    return key, record.id


def _seen(body: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in body["headers"]}


async def test_api_key_identity_reaches_upstream_and_key_does_not(start: Any, seeded: str) -> None:
    client = await start()
    key, key_id = await _key(seeded)
    r = await client.get(
        "/api/modules/crm/contacts/7",
        headers={"X-API-Key": key, "X-User-Id": "spoofed", "X-Scopes": "*", "X-Site-Id": "x"},
    )
    assert r.status == 200
    seen = _seen(await r.json())
    assert seen["x-api-key-id"] == key_id
    assert seen["x-site-id"] == SITE
    assert seen["x-module-id"] == MODULE_ID
    assert seen["x-scopes"] == "read:contacts"
    assert "x-user-id" not in seen
    assert "x-api-key" not in seen

    r = await client.get("/api/modules/crm/pass-through", headers={"X-API-Key": key})
    assert _seen(await r.json())["x-api-key"] == key  # the route asked for it


async def test_failures_are_401_and_all_look_the_same(start: Any, seeded: str) -> None:
    client = await start()
    revoked, revoked_id = await _key(seeded)
    expired, expired_id = await _key(seeded)
    conn = await asyncpg.connect(seeded)
    try:
        await revoke_key(conn, revoked_id)
        await conn.execute(
            "UPDATE module_api_keys SET expires_at = NOW() - interval '1 minute' WHERE id = $1",
            expired_id,
        )
    finally:
        await conn.close()

    # The gateway may have cached these keys from their creation's NOTIFY, before the revoke
    # and the expiry were written: wait until it has heard of both changes.
    async def refused(key: str) -> bool:
        async with client.get("/api/modules/crm/contacts/1", headers={"X-API-Key": key}) as r:
            return r.status == 401

    for gone in (revoked, expired):
        await eventually(
            partial(refused, gone), what="the gateway refuses a key changed after its creation"
        )
    bodies = []
    for headers in (
        {},
        {"X-API-Key": "not-a-key"},
        {"X-API-Key": generate_key()},
        {"X-API-Key": revoked},
        {"X-API-Key": expired},
        {"Authorization": "Bearer not.a.jwt"},
    ):
        r = await client.get("/api/modules/crm/contacts/1", headers=headers)
        assert r.status == 401, headers
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="modgate"'
        body = await r.json()
        bodies.append((body["error"], body["code"]))
    assert len(set(bodies)) == 1, bodies


async def test_ambiguous_credentials_are_401(start: Any, seeded: str) -> None:
    client = await start()
    key, _ = await _key(seeded)
    consumer_key = "dk_" + "A" * 43
    for pairs in (
        [("X-API-Key", key), ("X-API-Key", key)],
        [("X-API-Key", key), ("X-API-Key", "not-a-key")],
        [("Authorization", f"Bearer {consumer_key}"), ("Authorization", "Bearer x.y.z")],
        [("X-API-Key", key), ("Authorization", "bearer " + consumer_key)],
        [("X-API-Key", consumer_key), ("Authorization", f"Bearer {consumer_key}")],
    ):
        r = await client.get("/api/modules/crm/contacts/7", headers=CIMultiDict(pairs))
        assert r.status == 401, pairs
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="modgate"'
        body = await r.json()
        assert (body["code"], body["error"]) == (
            "unauthorized",
            "Ambiguous credentials: send at most one X-API-Key and one Authorization header, "
            "and a dk_ key in only one of them",
        ), pairs

    # X-API-Key for the gateway and a Bearer token for the module (not checked here, kept).
    r = await client.get(
        "/api/modules/crm/contacts/7",
        headers={"X-API-Key": key, "Authorization": "Bearer the-module's-own.token"},
    )
    assert r.status == 200
    seen = _seen(await r.json())
    assert seen["authorization"] == "Bearer the-module's-own.token" and "x-api-key" not in seen


async def test_wrong_module_scope_ip_and_origin_are_403(start: Any, seeded: str) -> None:
    client = await start(trusted_proxies="127.0.0.1/32")
    key, _ = await _key(seeded)
    r = await client.get("/api/modules/booking/x", headers={"X-API-Key": key})
    assert r.status == 403 and (await r.json())["code"] == "forbidden"
    r = await client.post("/api/modules/crm/contacts", headers={"X-API-Key": key})
    assert r.status == 403
    assert (await r.json())["error"] == "Missing scope: write:contacts"

    wildcard, _ = await _key(seeded, scopes=["write:*", "read:*"])
    r = await client.post("/api/modules/crm/contacts", headers={"X-API-Key": wildcard})
    assert r.status == 200

    v6, _ = await _key(seeded, allowed_ips=["2001:db8::/32", "192.0.2.0/24"])
    ok = {"X-API-Key": v6, "X-Forwarded-For": "2001:db8:1::5"}
    assert (await client.get("/api/modules/crm/contacts/1", headers=ok)).status == 200
    bad = {"X-API-Key": v6, "X-Forwarded-For": "2001:db9::5"}
    assert (await client.get("/api/modules/crm/contacts/1", headers=bad)).status == 403
    v4 = {"X-API-Key": v6, "X-Forwarded-For": "192.0.2.44"}
    assert (await client.get("/api/modules/crm/contacts/1", headers=v4)).status == 200

    browser, _ = await _key(seeded, allowed_origins=[APP])
    r = await client.get("/api/modules/crm/contacts/1", headers={"X-API-Key": browser})
    assert r.status == 403  # no Origin at all: refused
    r = await client.get(
        "/api/modules/crm/contacts/1",
        headers={"X-API-Key": browser, "Origin": "https://evil.example"},
    )
    assert r.status == 403
    r = await client.get(
        "/api/modules/crm/contacts/1", headers={"X-API-Key": browser, "Origin": APP}
    )
    assert r.status == 200


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(start: Any, seeded: str) -> None:
    client = await start()  # no trusted proxies
    key, _ = await _key(seeded, allowed_ips=["2001:db8::/32"])
    headers = {"X-API-Key": key, "X-Forwarded-For": "2001:db8::5"}
    assert (await client.get("/api/modules/crm/contacts/1", headers=headers)).status == 403


async def test_jwt_scopes_and_identity(start: Any) -> None:
    client = await start()
    now = int(time.time())
    token = pyjwt.encode(
        {"sub": "user-42", "site_id": SITE, "scope": "read:contacts", "exp": now + 60},
        SECRET,
        algorithm="HS256",
    )
    r = await client.get(
        "/api/modules/crm/contacts/9", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status == 200
    seen = _seen(await r.json())
    assert (seen["x-user-id"], seen["x-site-id"], seen["x-scopes"]) == (
        "user-42",
        SITE,
        "read:contacts",
    )
    assert "authorization" not in seen
    assert "x-api-key-id" not in seen
    r = await client.post("/api/modules/crm/contacts", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 403  # the seed granted '*' to every JWT; modgate grants what it carries
    forged = pyjwt.encode(
        {"sub": "u", "scope": "*", "exp": now + 60},
        "another-secret-of-32-bytes-or-more!",
        algorithm="HS256",
    )
    r = await client.get(
        "/api/modules/crm/contacts/9", headers={"Authorization": f"Bearer {forged}"}
    )
    assert r.status == 401


async def test_anonymous_routes(start: Any) -> None:
    client = await start()
    r = await client.get(f"/api/modules/crm/public?site_id={SITE}")
    seen = _seen(await r.json())
    assert (seen["x-site-id"], seen["x-scopes"]) == (SITE, "read:*")
    r = await client.get("/api/modules/crm/public?site_id=not-a-uuid")
    assert r.status == 400 and (await r.json())["code"] == "bad_request"
    r = await client.get("/api/modules/crm/public", headers={"X-API-Key": generate_key()})
    assert r.status == 401  # credentials that are present are checked, even here


async def test_cors_preflight_and_responses(start: Any, seeded: str, upstream: Any) -> None:
    _, log = upstream
    client = await start(cors_origins=APP)
    r = await client.options(
        "/api/modules/crm/contacts/5",
        headers={"Origin": APP, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "x-api-key"},
    )  # fmt: skip
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert r.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    assert "X-API-Key" in r.headers["Access-Control-Allow-Headers"]
    assert r.headers["Vary"] == "Origin"
    assert log.requests == []  # answered by the gateway, never forwarded

    r = await client.options(
        "/api/modules/crm/contacts/5",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert r.status == 403
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]

    key, _ = await _key(seeded)
    r = await client.get("/api/modules/crm/contacts/5", headers={"X-API-Key": key, "Origin": APP})
    assert r.status == 200
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert "Origin" in r.headers["Vary"]
    r = await client.get("/api/modules/crm/contacts/5", headers={"Origin": APP})
    assert r.status == 401  # errors carry CORS headers too, so the browser can read them
    assert r.headers["Access-Control-Allow-Origin"] == APP
    r = await client.get(
        "/api/modules/crm/contacts/5", headers={"X-API-Key": key, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_revocation_reaches_two_gateways_within_a_second(start: Any, seeded: str) -> None:
    first, second = await start(), await start()
    key, key_id = await _key(seeded)
    for client in (first, second):
        r = await client.get("/api/modules/crm/contacts/1", headers={"X-API-Key": key})
        assert r.status == 200  # cached as valid on both

    async def refused(client: Any) -> float:
        while True:
            r = await client.get("/api/modules/crm/contacts/1", headers={"X-API-Key": key})
            await r.read()
            if r.status == 401:
                return time.perf_counter()

    conn = await asyncpg.connect(seeded)
    try:
        assert await revoke_key(conn, key_id)
        committed = time.perf_counter()
    finally:
        await conn.close()
    done = await asyncio.wait_for(asyncio.gather(refused(first), refused(second)), 5)
    latency_ms = (max(done) - committed) * 1000
    print(f"\nrevocation live on both gateways after {latency_ms:.1f} ms")


async def test_random_keys_do_not_become_queries(start: Any, seeded: str) -> None:
    client = await start(key_lookup_budget_per_second=20)

    def lookups() -> float:
        return sum(
            REGISTRY.get_sample_value("modgate_api_key_lookups_total", {"result": r}) or 0.0
            for r in ("db_found", "db_unknown", "error")
        )

    before = lookups()
    started = time.perf_counter()
    for _ in range(10_000):
        r = await client.get("/api/modules/crm/contacts/1", headers={"X-API-Key": generate_key()})
        assert r.status == 401
        await r.read()
    elapsed = time.perf_counter() - started
    queries = lookups() - before
    print(f"\n10,000 random keys in {elapsed:.1f} s caused {queries:.0f} key queries")
    assert queries <= 20 * (elapsed + 1)


async def test_usage_is_written_in_batches(start: Any, seeded: str) -> None:
    client = await start(usage_flush_seconds=0.2)
    key, key_id = await _key(seeded)
    for _ in range(25):
        r = await client.get("/api/modules/crm/contacts/1", headers={"X-API-Key": key})
        assert r.status == 200
    conn = await asyncpg.connect(seeded)
    try:
        await eventually(
            lambda: conn.fetchval(
                "SELECT request_count FROM module_api_keys WHERE id = $1", key_id
            ),
            until=lambda count: count == 25,
            what="the key's request_count reaches 25",
        )
        assert await conn.fetchval(
            "SELECT last_used_at > NOW() - interval '1 minute' FROM module_api_keys WHERE id = $1",
            key_id,
        )
    finally:
        await conn.close()
    # The usage write sent no NOTIFY, so the key is still cached (no new query for it).
    r = await client.get("/api/modules/crm/contacts/1", headers={"X-API-Key": key})
    assert r.status == 200


async def test_key_created_after_start_works_at_once(start: Any, seeded: str) -> None:
    client = await start()
    key, _ = await _key(seeded)
    r = await client.get("/api/modules/crm/contacts/1", headers={"X-API-Key": key})
    assert r.status == 200  # found through the NOTIFY, or through the budgeted lookup
    assert str(uuid.UUID(MODULE_ID)) == MODULE_ID
