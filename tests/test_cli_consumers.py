"""`modgate consumers ...` as a user runs it: the real console script against a real Postgres."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import asyncpg
import pytest

from proxy.auth.consumer_keys import is_well_formed_consumer_key
from tests.support.process import run_cli

MODULE = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d11"
SITE = "5e0c1b2a-0000-4000-8000-00000000a011"
MISSING = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d99"


@pytest.fixture
async def cli_env(database: str) -> dict[str, str]:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("INSERT INTO modgate_modules (id, name) VALUES ($1, 'shop')", MODULE)
        # Hand-registered routes (consumers' endpoints must name one of them).
        await conn.executemany(
            "INSERT INTO module_api_routes (module_id, path, method, handler_type, is_active) "
            "VALUES ($1, $2, $3, 'static', $4)",
            [
                (MODULE, "/products", "GET", True),
                (MODULE, "/products/:productId", "GET", True),
                (MODULE, "/orders", "POST", True),
                (MODULE, "/orders/", "GET", True),
                (MODULE, "/files/*", "GET", True),
                (MODULE, "/retired", "GET", False),
            ],
        )
    finally:
        await conn.close()
    return {"MODGATE_DATABASE_URL": database}


async def consumers(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    # cwd: an empty folder, so the repository's config/gateway.yaml plays no part.
    return await run_cli("consumers", *args, env=env, cwd=str(cwd))


async def stored(database: str) -> list[dict[str, object]]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT to_jsonb(c) AS row FROM module_api_consumers c")
    finally:
        await conn.close()
    return [json.loads(r["row"]) for r in rows]


async def test_create_list_update_revoke(
    cli_env: dict[str, str], database: str, tmp_path: Path
) -> None:
    code, out = await consumers(
        cli_env, tmp_path, "create", "--module", MODULE, "--site", SITE, "--name", "Storefront",
        "--description", "the web shop", "--scope", "read", "--scope", "write",
        "--allowed-endpoint", "get /products", "--allowed-endpoint", "* /orders/",
        "--rate-limit-per-minute", "30", "--allowed-ip", "10.1.2.3/8",
    )  # fmt: skip
    assert code == 0, out
    created = re.fullmatch(
        r"created consumer ([0-9a-f-]{36}) \((dk_\S{9})\) 'Storefront'\n"
        r"key: (\S+)\n"
        r"This key is shown only once and cannot be shown again: store it now.\n",
        out,
    )
    assert created is not None, out
    consumer_id, prefix, key = created.groups()
    assert is_well_formed_consumer_key(key) and prefix == key[:12]
    [row] = await stored(database)
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps(row) and "api_key" not in row
    assert (row["scopes"], row["allowed_endpoints"]) == (
        ["read", "write"],
        ["GET /products", "* /orders"],
    )
    assert (row["allowed_ips"], row["rate_limit_per_day"]) == (["10.0.0.0/8"], 10000)

    code, out = await consumers(cli_env, tmp_path, "list", "--module", MODULE)
    assert code == 0, out
    header, line = out.splitlines()
    assert (
        header.split()
        == "ID PREFIX NAME SITE SCOPES ENDPOINTS STATUS LAST REQUEST REQUESTS".split()
    )
    assert line.split() == [
        consumer_id, prefix, "Storefront", SITE, "read,write", "GET", "/products,*", "/orders",
        "active", "never", "0",
    ]  # fmt: skip

    code, out = await consumers(
        cli_env, tmp_path, "update", consumer_id, "--scope", "admin", "--allowed-endpoint", "*",
        "--clear-allowed-ips", "--rate-limit-per-day", "5", "--clear-description",
    )  # fmt: skip
    assert (code, out) == (
        0,
        f"updated {consumer_id} ({prefix})\n"
        "  name: Storefront\n"
        "  description: -\n"
        "  scopes: admin\n"
        "  allowed_endpoints: *\n"
        "  rate_limit_per_minute: 30\n"
        "  rate_limit_per_day: 5\n"
        "  require_signature: False\n"
        "  allowed_ips: any\n"
        "  status: active\n",
    )

    # Requiring signatures of a consumer without a secret would lock it out: refused.
    code, out = await consumers(cli_env, tmp_path, "update", consumer_id, "--require-signature")
    assert code == 2, out
    assert "--require-signature" in out and "has no secret to sign with" in out, out

    code, out = await consumers(cli_env, tmp_path, "revoke", consumer_id)
    assert (code, out) == (0, f"revoked {consumer_id} ({prefix})\n")
    code, out = await consumers(cli_env, tmp_path, "revoke", consumer_id)
    assert (code, out) == (1, f"modgate: error: no active consumer {consumer_id}\n")

    code, out = await consumers(cli_env, tmp_path, "list", "--module", MODULE)
    assert (code, out) == (0, "no consumers\n")
    code, out = await consumers(cli_env, tmp_path, "list", "--module", MODULE, "--all", "--json")
    assert code == 0, out
    [listed] = json.loads(out)
    assert {k: listed[k] for k in ("id", "name", "site_id", "key_prefix", "scopes")} == {
        "id": consumer_id,
        "name": "Storefront",
        "site_id": SITE,
        "key_prefix": prefix,
        "scopes": ["admin"],
    }
    assert (listed["is_active"], listed["status"]) == (False, "revoked")
    assert "key_hash" not in listed and key not in out


async def test_create_json_defaults(cli_env: dict[str, str], tmp_path: Path) -> None:
    code, out = await consumers(
        cli_env, tmp_path, "create", "--module", MODULE, "--site", SITE, "--name", "x", "--json"
    )
    assert code == 0, out
    created = json.loads(out)
    assert is_well_formed_consumer_key(created["key"])
    assert created["key_prefix"] == created["key"][:12]
    assert {k: created[k] for k in ("module_id", "site_id", "scopes", "allowed_endpoints")} == {
        "module_id": MODULE,
        "site_id": SITE,
        "scopes": ["read"],
        "allowed_endpoints": ["*"],
    }
    assert (created["rate_limit_per_minute"], created["rate_limit_per_day"]) == (60, 10000)
    code, out = await consumers(cli_env, tmp_path, "list", "--module", MODULE, "--json")
    assert [c["id"] for c in json.loads(out)] == [created["id"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scope", "read:products"),
         "--scope: 'read:products' is not a consumer scope: expected read, write, delete or "
         "admin"),
        (("--allowed-endpoint", "products"),
         "--allowed-endpoint: 'products' is not an endpoint: expected '*' or 'METHOD /path' "
         "(METHOD one of GET POST PUT PATCH DELETE or *; each path segment literal text of "
         "letters, digits and -._~!$&'()+,;=@, :name for a parameter, or a last segment * as "
         "in a route's own path)"),
        (("--allowed-endpoint", "GET /nonexistent"),
         f"--allowed-endpoint: 'GET /nonexistent' matches no route of module {MODULE} (its "
         "routes: GET /files/*, GET /orders/, GET /products, GET /products/:productId, POST "
         "/orders)"),
        (("--allowed-endpoint", "GET /products/*"),
         f"--allowed-endpoint: 'GET /products/*' matches no route of module {MODULE}; a last "
         "segment * names a route whose own path ends in *, not every path below (its routes: "
         "GET /files/*, GET /orders/, GET /products, GET /products/:productId, POST /orders)"),
        (("--allowed-endpoint", "GET /retired"),  # an inactive route is no route
         f"--allowed-endpoint: 'GET /retired' matches no route of module {MODULE} (its "
         "routes: GET /files/*, GET /orders/, GET /products, GET /products/:productId, POST "
         "/orders)"),
        (("--allowed-endpoint", "DELETE /products/:id"),
         f"--allowed-endpoint: 'DELETE /products/:id' matches no route of module {MODULE} (its "
         "routes: GET /files/*, GET /orders/, GET /products, GET /products/:productId, POST "
         "/orders)"),
        (("--name", "evil\r\n\x1b[2J"),
         "--name: 'evil\\r\\n\\x1b[2J' holds a control character (CR, LF, ESC, ...)"),
        (("--description", "a\x1b]0;title\x07"),
         "--description: 'a\\x1b]0;title\\x07' holds a control character (CR, LF, ESC, ...)"),
        (("--allowed-ip", "10.0.0.300"),
         "--allowed-ip: '10.0.0.300' is not an IP address or CIDR network"),
        (("--rate-limit-per-minute", "many"),
         "--rate-limit-per-minute: expected a whole number, got 'many'"),
        (("--rate-limit-per-day", "0"),
         "--rate-limit-per-day: expected a whole number from 1 to 2147483647, got 0"),
        (("--name", " "), "--name: must not be empty"),
    ],
)  # fmt: skip
async def test_bad_values_name_their_flag(
    cli_env: dict[str, str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    code, out = await consumers(
        cli_env, tmp_path, "create", "--module", MODULE, "--site", SITE, "--name", "x", *args
    )
    assert (code, out) == (2, f"modgate: error: {message}\n")


async def test_unknown_module_and_unknown_consumer(cli_env: dict[str, str], tmp_path: Path) -> None:
    code, out = await consumers(
        cli_env, tmp_path, "create", "--module", MISSING, "--site", SITE, "--name", "x"
    )
    assert (code, out) == (
        2,
        f"modgate: error: --module: no module {MISSING} (register it first: modgate routes "
        "apply)\n",
    )
    code, out = await consumers(cli_env, tmp_path, "update", MISSING, "--name", "y")
    assert (code, out) == (1, f"modgate: error: no consumer {MISSING}\n")
    code, out = await consumers(cli_env, tmp_path, "update", MISSING)
    assert code == 2 and "nothing to update" in out


async def test_endpoints_name_routes_whatever_their_parameter_names(
    cli_env: dict[str, str], database: str, tmp_path: Path
) -> None:
    code, out = await consumers(
        cli_env, tmp_path, "create", "--module", MODULE, "--site", SITE, "--name", "x",
        "--allowed-endpoint", "GET /products/:id", "--allowed-endpoint", "GET /files/*",
        "--allowed-endpoint", "* /orders", "--json",
    )  # fmt: skip
    assert code == 0, out
    consumer_id = json.loads(out)["id"]
    assert json.loads(out)["allowed_endpoints"] == [
        "GET /products/:id", "GET /files/*", "* /orders",
    ]  # fmt: skip
    code, out = await consumers(
        cli_env, tmp_path, "update", consumer_id, "--allowed-endpoint", "PUT /orders"
    )
    assert (code, out) == (
        2,
        f"modgate: error: --allowed-endpoint: 'PUT /orders' matches no route of module {MODULE} "
        "(its routes: GET /files/*, GET /orders/, GET /products, GET /products/:productId, "
        "POST /orders)\n",
    )
    code, out = await consumers(
        cli_env, tmp_path, "update", consumer_id, "--name", "y\nz", "--description", "ok"
    )
    assert (code, out) == (
        2,
        "modgate: error: --name: 'y\\nz' holds a control character (CR, LF, ESC, ...)\n",
    )
    assert [row["name"] for row in await stored(database)] == ["x"]


async def test_the_table_escapes_what_a_hand_written_row_holds(
    cli_env: dict[str, str], database: str, tmp_path: Path
) -> None:
    code, out = await consumers(
        cli_env, tmp_path, "create", "--module", MODULE, "--site", SITE, "--name", "x"
    )
    assert code == 0, out
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("UPDATE module_api_consumers SET name = $1", "a\r\nb\x1b[2J")
    finally:
        await conn.close()
    code, out = await consumers(cli_env, tmp_path, "list")
    assert code == 0, out
    assert "\x1b" not in out and "\r" not in out and len(out.splitlines()) == 2
    assert out.splitlines()[1].split()[2] == "a\\r\\nb\\x1b[2J"


async def test_create_with_secret_prints_it_once(
    cli_env: dict[str, str], database: str, tmp_path: Path
) -> None:
    args = ("create", "--module", MODULE, "--site", SITE, "--name", "Signer", "--with-secret",
            "--require-signature")  # fmt: skip
    code, out = await consumers(cli_env, tmp_path, *args)
    assert code == 2
    assert "--with-secret needs secrets_key" in out and "MODGATE_SECRETS_KEY" in out
    env = {**cli_env, "MODGATE_SECRETS_KEY": base64.b64encode(b"k" * 32).decode()}
    code, out = await consumers(env, tmp_path, *args, "--json")
    assert code == 0, out
    created = json.loads(out)
    assert len(created["secret"]) == 43 and created["require_signature"] is True
    code, out = await consumers(env, tmp_path, *args)
    assert code == 0, out
    assert re.search(r"^secret: \S{43}$", out, re.MULTILINE) is not None
    assert "The key and the secret are shown only once" in out
    rows = await stored(database)
    assert all(row["require_signature"] and row["secret_ciphertext"] for row in rows)
    assert created["secret"] not in json.dumps(rows)
