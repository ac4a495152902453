"""A key's address fields read the same whichever door they come in by (issue 14, item 4): the
store (`modgate keys`), the embedded manifest's `api_keys` and the settings' `cors_origins`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from proxy.auth.api_keys import generate_key, hash_key
from proxy.auth.key_fields import normalize_network, normalize_origin
from proxy.auth.manifest_keys import records_from_manifest
from proxy.settings import load_settings
from proxy.store.keys import create_key
from tests.support.gateway import MODULE_ID, gateway_for, manifest

SITE = "11111111-2222-4333-8444-555555555555"
AGENCY = "99999999-2222-4333-8444-555555555555"
ORIGINS = ["https://App.Example:443", "HTTP://api.example:8080", "https://app.example"]
NETWORKS = ["10.1.2.3/8", "2001:DB8::0001", " 192.0.2.1 "]
NORMAL_ORIGINS = ("https://app.example", "http://api.example:8080")
NORMAL_NETWORKS = ("10.0.0.0/8", "2001:db8::1", "192.0.2.1")


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("*", "*"),
        ("https://App.Example:443", "https://app.example"),
        ("http://x:80", "http://x"),
        ("http://x:8080", "http://x:8080"),
        ("https://[2001:DB8::1]:443", "https://[2001:db8::1]"),
        ("https://app.example/", None),
        ("https://app.example/path", None),
        ("https://user@app.example", None),
        ("https://app.example?x", None),
        ("app.example", None),
    ],
)
def test_origin_normal_form(text: str, normal: str | None) -> None:
    assert normalize_origin(text) == normal


def test_network_normal_form() -> None:
    assert [normalize_network(n) for n in NETWORKS] == list(NORMAL_NETWORKS)
    assert normalize_network("10.0.0.300") is None


async def test_the_same_key_gives_the_same_fields_from_manifest_and_store(database: str) -> None:
    key = generate_key()
    row = {
        "module_id": MODULE_ID, "site_id": SITE, "agency_id": AGENCY, "key_hash": hash_key(key),
        "allowed_origins": ORIGINS, "allowed_ips": NETWORKS,
    }  # fmt: skip
    (from_manifest,) = records_from_manifest([row])
    conn = await asyncpg.connect(database)
    try:
        from_store, _ = await create_key(
            conn, module_id=MODULE_ID, site_id=SITE, agency_id=AGENCY, name="k",
            allowed_origins=ORIGINS, allowed_ips=NETWORKS,
        )  # fmt: skip
    finally:
        await conn.close()
    assert from_manifest.allowed_origins == tuple(from_store.allowed_origins) == NORMAL_ORIGINS
    assert from_manifest.allowed_ips == tuple(from_store.allowed_ips) == NORMAL_NETWORKS


def test_cors_origins_setting_is_normalised(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text("{}\n")
    settings = load_settings(
        str(tmp_path / "gw.yaml"), environ={}, overrides={"cors_origins": ORIGINS[:2]}
    )
    assert settings.cors_origins == NORMAL_ORIGINS


async def test_a_manifest_key_limited_to_an_origin_works_from_that_browser(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """Was 403: the manifest kept `https://App.Example:443` while browsers send
    `https://app.example`."""
    key = generate_key()
    data = manifest(
        None,
        [{"path": "/who", "method": "GET", "handler_type": "static", "handler_code": "{}",
          "requires_auth": True}],
    )  # fmt: skip
    data["api_keys"] = [
        {"module_id": MODULE_ID, "site_id": SITE, "key_hash": hash_key(key),
         "scopes": ["read:*"], "allowed_origins": ["https://App.Example:443"]}
    ]  # fmt: skip
    _, app = gateway_for(tmp_path, data)
    client = await aiohttp_client(app)
    headers = {"X-API-Key": key, "Origin": "https://app.example"}
    r = await client.get("/api/modules/crm/who", headers=headers)
    assert r.status == 200, await r.text()
    r = await client.get("/api/modules/crm/who", headers={**headers, "Origin": "https://evil"})
    assert r.status == 403
