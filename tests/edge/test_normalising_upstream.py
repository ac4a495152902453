"""Issue 12 deliverable 9, second point: behind the gateway, a real normalising upstream.

nginx (tests/support/nginx.py) serves /base/public/page to anyone and /base/admin/secret,
which only `/admin/*` (a scope) should reach. nginx decodes %2F and %5C, merges slashes and
resolves dot segments itself, so any path game the gateway forwards un-normalised reads the
secret. Not one of the variants below may return it without credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.edge import (
    ADMIN_KEY,
    RunningGateway,
    edge_manifest,
    exchange,
    raw_request,
    start_gateway,
)
from tests.support.nginx import Nginx

SECRET = b"ADMIN-SECRET-CONTENT"
PUBLIC = b"public page"
PREFIX = "/api/modules/crm"

# Targets sent as they are; a path starting with "/" goes after PREFIX.
VARIANTS = [
    # dot segments, in every encoding of the dots
    "/public/../admin/secret",
    "/public/%2e%2e/admin/secret",
    "/public/%2E%2E/admin/secret",
    "/public/.%2e/admin/secret",
    "/public/%2E./admin/secret",
    "/public/./../admin/secret",
    "/public/x/../../admin/secret",
    "/public/%2e/%2e%2e/admin/secret",
    "/public/x/%2e%2e/%2E%2E/admin/secret",
    "/public/../../base/admin/secret",
    "/public/%2e%2e/%2e%2e/base/admin/secret",
    # double slashes around them
    "/public//../admin/secret",
    "//public/../admin/secret",
    "/public/..//admin/secret",
    "/public/.//..//admin//secret",
    # encoded slashes and backslashes (nginx decodes both)
    "/public/..%2Fadmin%2Fsecret",
    "/public/..%2fadmin/secret",
    "/public/%2e%2e%2fadmin/secret",
    "/public/%2e%2e%2F%2e%2e%2Fbase%2Fadmin%2Fsecret",
    "/public/a/..%2F..%2F..%2Fbase%2Fadmin%2Fsecret",
    "/public/..%5Cadmin%5Csecret",
    "/public/%5C..%5Cadmin/secret",
    "/public/..%252Fadmin/secret",
    "/public/%252e%252e/admin/secret",
    # routes that keep encoded slashes (`/raw/*`, `/kfiles/*`): nginx decodes them, so a
    # segment hiding a dot segment behind them must be refused even there
    "/raw/..%2Fadmin%2Fsecret",
    "/raw/x%2F..%2F..%2Fadmin%2Fsecret",
    "/raw/..%5Cadmin%5Csecret",
    "/kfiles/..%2Fbase%2Fadmin%2Fsecret",
    "/kfiles/%2e%2e%2Fbase%2Fadmin%2Fsecret",
    "/kfiles/..%5Cbase%5Cadmin%5Csecret",
    # raw backslashes
    "/public/..\\admin\\secret",
    "/public\\..\\admin\\secret",
    # mixed case and odd spellings
    "/PUBLIC/../admin/secret",
    "/public/../ADMIN/secret",
    "/public/../Admin/Secret",
    "/public/%2E%2e/admin/secret.",
    "/public/../admin/secret./",
    "/public/.../admin/secret",
    "/public/%c0%ae%c0%ae/admin/secret",
    "/public/%u002e%u002e/admin/secret",
    "/public/..%00/admin/secret",
    "/public/..%09/admin/secret",
    # `;` path parameters
    "/public/..;/admin/secret",
    "/public/;/../admin/secret",
    "/public/..;x=1/admin/secret",
    "/public/%2e%2e;/admin/secret",
    # the admin route itself, and the module named another way
    "/admin/secret",
    "/admin/./secret",
    "/admin//secret",
    "/api/modules/%63rm/admin/secret",
    "/api/modules/CRM/public/../admin/secret",
    "/api/modules/x/../crm/admin/secret",
    "http://gateway.test/api/modules/crm/public/../admin/secret",
    "http://gateway.test/api/modules/crm/public/%2e%2e/admin/secret",
]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    files = {"/base/public/page": PUBLIC, "/base/admin/secret": SECRET}
    server = Nginx(tmp_path_factory.mktemp("nginx"), files).start()
    yield server
    server.stop()


def _target(variant: str) -> str:
    return variant if variant.startswith(("/api/", "http:")) else PREFIX + variant


async def test_nginx_is_a_normalising_upstream(nginx: Nginx) -> None:
    """The premise: straight to nginx, path games do reach the secret."""
    for path in ("/base/public/../admin/secret", "/base/public/%2e%2e%2fadmin/secret"):
        r = await exchange(nginx.port, raw_request("GET", path))
        assert (r.status, r.body) == (200, SECRET), path


async def test_routes_serve_what_they_authorise(nginx: Nginx, tmp_path: Path) -> None:
    """The control: the public page anonymously, the secret only with the admin key."""
    gateway = await _gateway(nginx, tmp_path)
    try:
        r = await gateway.exchange(raw_request("GET", f"{PREFIX}/public/page"))
        assert (r.status, r.body) == (200, PUBLIC)
        r = await gateway.exchange(raw_request("GET", f"{PREFIX}/admin/secret"))
        assert r.status == 401
        key = [("X-API-Key", ADMIN_KEY)]
        r = await gateway.exchange(raw_request("GET", f"{PREFIX}/admin/secret", key))
        assert (r.status, r.body) == (200, SECRET)
    finally:
        await gateway.close()


@pytest.mark.parametrize("variant", VARIANTS)
async def test_no_path_game_reaches_the_admin_resource(
    nginx: Nginx, tmp_path: Path, variant: str
) -> None:
    gateway = await _gateway(nginx, tmp_path)
    try:
        r = await gateway.exchange(raw_request("GET", _target(variant)))
    finally:
        await gateway.close()
    assert SECRET not in r.body, (variant, r.status)
    assert r.status != 200 or r.body == PUBLIC, (variant, r.status, r.body[:200])


async def _gateway(nginx: Nginx, tmp_path: Path) -> RunningGateway:
    """`/public/*`, `/admin/*` and the two routes that keep encoded slashes (`/raw/*`,
    `/kfiles/*`) of `edge_manifest` (with its admin key), in front of nginx."""
    data = edge_manifest(f"{nginx.url}")
    [module] = data["modules"]
    kept = ("/public/*", "/admin/*", "/raw/*", "/kfiles/*")
    module["routes"] = [route for route in module["routes"] if route["path"] in kept]
    return await start_gateway(tmp_path / "gateway", data)
