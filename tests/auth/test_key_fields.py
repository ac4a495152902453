"""A key reads the same whichever door it comes in by (issue 14, item 4): the store and the
CLI (`modgate keys`), the embedded manifest's `api_keys`, and for origins the settings'
`cors_origins`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from proxy.auth.api_keys import ApiKeyRecord, generate_key, hash_key, key_prefix
from proxy.auth.key_fields import (
    DEFAULT_RATE_LIMIT_PER_DAY,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    INT4_MAX,
    InvalidKeyField,
    normalize_network,
    normalize_origin,
)
from proxy.auth.manifest_keys import records_from_manifest
from proxy.errors import ManifestError
from proxy.settings import load_settings
from proxy.store.keys import create_key, fetch_active_key
from tests.support.gateway import MODULE_ID, gateway_for, manifest
from tests.support.process import run_cli

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


# As a person writes them: mixed-case UUIDs and origins, default ports, host bits, repeats.
WRITTEN: dict[str, Any] = {
    "module_id": MODULE_ID.upper(), "site_id": SITE.upper(), "agency_id": AGENCY,
    "name": " CRM sync ", "scopes": ["read:contacts", "write:*", "read:contacts"],
    "allowed_origins": ORIGINS, "allowed_ips": NETWORKS,
}  # fmt: skip


def manifest_row(key: str, key_id: str) -> dict[str, Any]:
    """WRITTEN as an embedded manifest's `api_keys` row; limits unset, so the defaults."""
    return {
        **WRITTEN,
        "id": key_id.upper(),
        "key_hash": hash_key(key),
        "key_prefix": key_prefix(key),
    }


async def stored(database: str, key: str) -> ApiKeyRecord:
    """The key as a Postgres gateway reads it."""
    conn = await asyncpg.connect(database)
    try:
        record = await fetch_active_key(conn, hash_key(key))
    finally:
        await conn.close()
    assert record is not None
    return record


async def test_the_same_key_gives_the_same_record_from_manifest_and_store(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        _, key = await create_key(conn, **WRITTEN)
    finally:
        await conn.close()
    from_store = await stored(database, key)
    (from_manifest,) = records_from_manifest([manifest_row(key, from_store.id)])
    assert from_manifest == from_store
    assert from_store.allowed_origins == NORMAL_ORIGINS
    assert from_store.allowed_ips == NORMAL_NETWORKS
    assert from_store.scopes == ("read:contacts", "write:*")
    assert (from_store.module_id, from_store.name) == (MODULE_ID, "CRM sync")
    assert (from_store.rate_limit_per_minute, from_store.rate_limit_per_day) == (
        DEFAULT_RATE_LIMIT_PER_MINUTE,
        DEFAULT_RATE_LIMIT_PER_DAY,
    )


async def test_the_same_key_gives_the_same_record_from_manifest_and_cli(
    database: str, tmp_path: Path
) -> None:
    flags = ["--module", WRITTEN["module_id"], "--site", WRITTEN["site_id"]]
    flags += ["--agency", AGENCY, "--name", WRITTEN["name"]]
    for flag, field in (
        ("--scope", "scopes"),
        ("--allowed-origin", "allowed_origins"),
        ("--allowed-ip", "allowed_ips"),
    ):
        for value in WRITTEN[field]:
            flags += [flag, value]
    code, out = await run_cli(
        "keys", "create", *flags, "--json", env={"MODGATE_DATABASE_URL": database},
        cwd=str(tmp_path),
    )  # fmt: skip
    assert code == 0, out
    key = json.loads(out)["key"]
    from_cli = await stored(database, key)
    (from_manifest,) = records_from_manifest([manifest_row(key, from_cli.id)])
    assert from_manifest == from_cli


async def test_each_rule_reads_the_same_from_manifest_and_store(database: str) -> None:
    """One rule, one text: only the door's prefix differs (`api_keys[0].` or none)."""
    bad = [
        {"module_id": "crm"},
        {"scopes": ["read all"]},
        {"scopes": ["read\r\nX-Admin: 1"]},  # would have ended the X-Scopes header line
        {"scopes": ["read\x00"]},  # no whitespace, but a control character all the same
        {"scopes": "read"},
        {"allowed_ips": ["10.0.0.0/33"]},
        {"allowed_origins": ["https://a.example/app"]},
        {"rate_limit_per_minute": 0},
        {"rate_limit_per_day": INT4_MAX + 1},
        {"rate_limit_per_day": True},
        {"name": "   "},
    ]
    conn = await asyncpg.connect(database)
    try:
        for fields in bad:
            with pytest.raises(InvalidKeyField) as from_store:
                await create_key(conn, **{**WRITTEN, **fields})
            with pytest.raises(ManifestError) as from_manifest:
                records_from_manifest([{**manifest_row(generate_key(), SITE), **fields}])
            assert str(from_manifest.value) == f"<manifest>: api_keys[0].{from_store.value}"
        assert await conn.fetchval("SELECT count(*) FROM module_api_keys") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key_hash": "ABC"}, "api_keys[0].key_hash: expected the key's SHA-256 as 64 "
         "lowercase hex characters, got 'ABC'"),
        ({"hash": "x"}, "api_keys[0]: unknown field 'hash'"),
        ({"is_active": "yes"}, "api_keys[0].is_active: expected true or false, got 'yes'"),
        ({"expires_at": "soon"}, "api_keys[0].expires_at: expected an ISO 8601 timestamp, "
         "got 'soon'"),
        ({"allowed_ips": {"10.0.0.1": 1}}, "api_keys[0].allowed_ips: expected a list of "
         "strings, got {'10.0.0.1': 1}"),
    ],
)  # fmt: skip
def test_manifest_errors_name_the_row_and_field(fields: dict[str, Any], message: str) -> None:
    row = {**manifest_row(generate_key(), SITE), **fields}
    with pytest.raises(ManifestError) as caught:
        records_from_manifest([row], "gw.yaml")
    assert str(caught.value) == f"gw.yaml: {message}"


def test_manifest_limits_null_is_unlimited_and_unset_is_the_default() -> None:
    row = {**manifest_row(generate_key(), SITE), "rate_limit_per_minute": None}
    (record,) = records_from_manifest([row])
    assert (record.rate_limit_per_minute, record.rate_limit_per_day) == (
        None,
        DEFAULT_RATE_LIMIT_PER_DAY,
    )


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
