"""CORS through the real in-process gateway and a real upstream that sends its own CORS headers.

The invariant under test: while CORS is on, the only Access-Control-* headers a client sees
are the gateway's, and only an allowed origin gets them; every response says Vary: Origin.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from proxy.auth.cors import EXPOSED, apply_gateway_cors, strip_foreign_cors, vary_with_origin
from tests.support.gateway import gateway_for, manifest

APP = "https://app.example"
EVIL = "https://evil.example"
# What a module that does its own (careless) CORS sends with every answer.
MODULE_CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Credentials", "true"),
    ("Access-Control-Expose-Headers", "X-Module-Secret"),
    ("access-control-allow-methods", "GET, PUT, DELETE"),
)
ROUTES = [
    {"path": "/items/:id", "method": "GET", "handler_type": "proxy"},
    {"path": "/items/:id", "method": "DELETE", "handler_type": "proxy", "requires_auth": True},
    {"path": "/private", "method": "GET", "handler_type": "proxy", "requires_auth": True},
    {"path": "/vary/:kind", "method": "GET", "handler_type": "proxy"},
    {"path": "/static", "method": "GET", "handler_type": "static", "handler_code": '"hi"'},
]
VARY_SENT = {
    "none": [],
    "two-lines": ["Accept-Encoding", "Accept-Language"],
    "origin": ["accept-encoding, origin"],
    "star": ["*"],
}


def _module_upstream(seen: list[str]) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        response = web.json_response({"ok": True})
        for name, value in MODULE_CORS:
            response.headers.add(name, value)
        kind = request.match_info["tail"].removeprefix("vary/")
        for value in VARY_SENT.get(kind, ["Accept-Encoding"]):
            response.headers.add("Vary", value)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


@pytest.fixture
async def module(aiohttp_server: Any) -> tuple[str, list[str]]:
    seen: list[str] = []
    server = await aiohttp_server(_module_upstream(seen))
    return f"http://127.0.0.1:{server.port}", seen


@pytest.fixture
def gateway(aiohttp_client: Any, tmp_path: Any, module: tuple[str, list[str]]) -> Any:
    async def make(**overrides: object) -> Any:
        _, app = gateway_for(tmp_path, manifest(module[0], ROUTES), **overrides)
        return await aiohttp_client(app)

    return make


def _cors_lines(response: Any) -> list[tuple[str, str]]:
    """Every Access-Control-* line as sent, any case, duplicates kept."""
    return [
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in response.raw_headers
        if name.lower().startswith(b"access-control-")
    ]


def _vary_lines(response: Any) -> list[str]:
    return [
        value.decode("latin-1") for name, value in response.raw_headers if name.lower() == b"vary"
    ]


def _preflight(method: str = "GET", origin: str = APP) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "x-api-key, content-type",
    }


async def test_module_cors_headers_reach_no_caller(gateway: Any, module: Any) -> None:
    client = await gateway(cors_origins=[APP])
    for headers in ({"Origin": EVIL}, {}, {"Origin": "null"}):
        r = await client.get("/api/modules/crm/items/1", headers=headers)
        assert r.status == 200, headers
        assert _cors_lines(r) == [], headers
        assert _vary_lines(r) == ["Accept-Encoding, Origin"]

    r = await client.get("/api/modules/crm/items/1", headers={"Origin": APP})
    assert r.status == 200
    assert sorted(_cors_lines(r)) == [
        ("access-control-allow-origin", APP),
        ("access-control-expose-headers", EXPOSED),
    ]
    assert _vary_lines(r) == ["Accept-Encoding, Origin"]
    assert module[1] == ["GET /items/1"] * 4  # every one of them was forwarded


async def test_credentials_echo_the_origin_never_a_star(gateway: Any) -> None:
    client = await gateway(cors_origins=["*"], cors_allow_credentials=True)
    anyone = "https://anyone.example"
    r = await client.get("/api/modules/crm/items/1", headers={"Origin": anyone})
    assert sorted(_cors_lines(r)) == [
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-origin", anyone),
        ("access-control-expose-headers", EXPOSED),
    ]
    r = await client.options("/api/modules/crm/items/1", headers=_preflight(origin=anyone))
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == anyone
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    r = await client.get("/api/modules/crm/items/1")
    assert _cors_lines(r) == []  # no Origin, nothing to allow: the module's own are gone too

    client = await gateway(cors_origins=[APP])  # the default: no credentials flag
    r = await client.get("/api/modules/crm/items/1", headers={"Origin": APP})
    assert "Access-Control-Allow-Credentials" not in r.headers


@pytest.mark.parametrize(
    ("kind", "vary"),
    [
        ("none", "Origin"),
        ("two-lines", "Accept-Encoding, Accept-Language, Origin"),
        ("origin", "accept-encoding, origin"),
        ("star", "*"),
    ],
)
async def test_vary_is_merged_with_the_modules(gateway: Any, kind: str, vary: str) -> None:
    client = await gateway(cors_origins=[APP])
    for headers in ({"Origin": APP}, {"Origin": EVIL}, {}):
        r = await client.get(f"/api/modules/crm/vary/{kind}", headers=headers)
        assert r.status == 200
        assert _vary_lines(r) == [vary]


async def test_preflight_header_sets(gateway: Any, module: Any) -> None:
    client = await gateway(cors_origins=[APP], cors_max_age_seconds=120)
    # An anonymous route and one that requires credentials: both allow the credential headers
    # (credentials sent to an anonymous route are still checked and used).
    for path, methods in (
        ("/items/1", "GET, HEAD, DELETE, OPTIONS"),
        ("/private", "GET, HEAD, OPTIONS"),
    ):
        r = await client.options(f"/api/modules/crm{path}", headers=_preflight())
        assert r.status == 204, path
        assert dict(_cors_lines(r)) == {
            "access-control-allow-origin": APP,
            "access-control-allow-methods": methods,
            "access-control-allow-headers": "Content-Type, X-Request-ID, Authorization, X-API-Key",
            "access-control-max-age": "120",
        }
        assert len(_cors_lines(r)) == 4
        assert _vary_lines(r) == ["Origin"]
        assert r.headers["X-Request-ID"]
    assert module[1] == []  # answered by the gateway, never forwarded


async def test_preflight_refused_origin_and_unknown_paths(gateway: Any, module: Any) -> None:
    client = await gateway(cors_origins=[APP])
    r = await client.options("/api/modules/crm/items/1", headers=_preflight(origin=EVIL))
    assert r.status == 403
    assert (await r.json())["code"] == "forbidden"
    assert _cors_lines(r) == []
    assert _vary_lines(r) == ["Origin"]

    # An allowed origin's preflight to a path no route matches, or to an unknown module: the
    # 404 carries the CORS headers, so the browser sees the 404 rather than a CORS failure.
    # A refused origin learns nothing either way (the module is looked up first).
    for path, code, refused in (
        ("/api/modules/crm/nowhere", "route_not_found", 403),
        ("/api/modules/no-such-module/items/1", "module_not_found", 404),
    ):
        r = await client.options(path, headers=_preflight())
        assert r.status == 404, path
        body = await r.json()
        assert body["code"] == code and body["request_id"] == r.headers["X-Request-ID"]
        assert dict(_cors_lines(r)) == {"access-control-allow-origin": APP}
        assert _vary_lines(r) == ["Origin"]
        r = await client.options(path, headers=_preflight(origin=EVIL))
        assert r.status == refused, path
        assert _cors_lines(r) == [] and _vary_lines(r) == ["Origin"]
    assert module[1] == []


async def test_vary_origin_on_every_response(gateway: Any) -> None:
    client = await gateway(cors_origins=[APP])
    for headers in ({"Origin": APP}, {"Origin": EVIL}, {}):
        allowed = headers.get("Origin") == APP
        for method, path, status in (
            ("GET", "/api/modules/crm/static", 200),
            ("GET", "/api/modules/crm/private", 401),
            ("POST", "/api/modules/crm/static", 405),
            ("GET", "/api/modules/crm/nowhere", 404),
            ("GET", "/api/modules/nope/x", 404),
            ("GET", "/elsewhere", 404),
        ):
            r = await client.request(method, path, headers=headers)
            assert r.status == status, (method, path)
            assert _vary_lines(r) == ["Origin"], (method, path)
            assert (r.headers.get("Access-Control-Allow-Origin") == APP) is allowed


async def test_preflight_counted_under_its_route(gateway: Any) -> None:
    def count(route: str, status: str) -> float:
        labels = {"module": "crm", "route": route, "method": "OPTIONS", "status": status}
        return REGISTRY.get_sample_value("modgate_requests_total", labels) or 0.0

    client = await gateway(cors_origins=[APP])
    before = count("/items/:id", "204"), count("/private", "204"), count("unmatched", "404")
    await client.options("/api/modules/crm/items/1", headers=_preflight("DELETE"))
    await client.options("/api/modules/crm/items/2", headers=_preflight("GET"))
    await client.options("/api/modules/crm/private", headers=_preflight("PUT"))  # no PUT route
    await client.options("/api/modules/crm/nowhere", headers=_preflight())
    after = count("/items/:id", "204"), count("/private", "204"), count("unmatched", "404")
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]


async def test_cors_off_leaves_module_headers_alone(gateway: Any) -> None:
    client = await gateway()
    r = await client.get("/api/modules/crm/items/1", headers={"Origin": APP})
    assert sorted(_cors_lines(r)) == sorted((n.lower(), v) for n, v in MODULE_CORS)
    assert _vary_lines(r) == ["Accept-Encoding"]
    r = await client.get("/api/modules/crm/static", headers={"Origin": APP})
    assert "Vary" not in r.headers


# -- the functions a response from behind the gateway goes through (upstream or handler pool)


@pytest.mark.parametrize(
    ("sent", "vary"),
    [
        ([], "Origin"),
        (["Accept-Encoding"], "Accept-Encoding, Origin"),
        (["Accept-Encoding", "Cookie"], "Accept-Encoding, Cookie, Origin"),
        (["Origin"], "Origin"),
        (["X-Origin-Hint"], "X-Origin-Hint, Origin"),  # a name that contains "origin" is not it
        ([" accept,  ,ORIGIN "], "accept, ORIGIN"),
        (["Accept", "*"], "*"),
    ],
)
def test_vary_with_origin(sent: list[str], vary: str) -> None:
    assert vary_with_origin(sent) == vary


def test_apply_gateway_cors_leaves_only_the_gateways() -> None:
    headers: CIMultiDict[str] = CIMultiDict(
        [*MODULE_CORS, ("ACCESS-CONTROL-ALLOW-ORIGIN", "*"), ("Vary", "Accept"),
         ("Content-Type", "application/json"), ("Vary", "Cookie")]
    )  # fmt: skip
    extra = {"X-Request-ID": "r1", "Vary": "Origin", "Access-Control-Allow-Origin": APP}
    apply_gateway_cors(headers, extra)
    assert list(headers.items()) == [
        ("Content-Type", "application/json"),
        ("X-Request-ID", "r1"),
        ("Vary", "Accept, Cookie, Origin"),
        ("Access-Control-Allow-Origin", APP),
    ]
    headers = CIMultiDict(MODULE_CORS)
    strip_foreign_cors(headers)
    assert not headers
