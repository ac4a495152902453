"""`modgate keys ...` as a user runs it: the real console script against a real Postgres."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import asyncpg
import pytest

from proxy.auth.api_keys import is_well_formed
from tests.support.process import run_cli

MODULE = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d01"
SITE = "5e0c1b2a-0000-4000-8000-00000000a001"
AGENCY = "a9e0c1b2-0000-4000-8000-00000000b001"
USER = "c0ffee00-0000-4000-8000-00000000c001"
IDENTITY = ("--module", MODULE, "--site", SITE, "--agency", AGENCY)


@pytest.fixture
def cli_env(database: str) -> dict[str, str]:
    return {"MODGATE_DATABASE_URL": database}


async def keys(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    # cwd: an empty folder, so the repository's config/gateway.yaml plays no part.
    return await run_cli("keys", *args, env=env, cwd=str(cwd))


async def stored_hashes(database: str) -> list[str]:
    conn = await asyncpg.connect(database)
    try:
        return [r[0] for r in await conn.fetch("SELECT key_hash FROM module_api_keys")]
    finally:
        await conn.close()


async def test_create_list_update_revoke(
    cli_env: dict[str, str], database: str, tmp_path: Path
) -> None:
    code, out = await keys(
        cli_env,
        tmp_path,
        "create",
        *IDENTITY,
        "--name",
        "CRM sync",
        "--scope",
        "read:contacts",
        "--allowed-ip",
        "10.1.2.3/8",
        "--created-by",
        USER,
    )
    assert code == 0, out
    match = re.search(r"^key: (\S+)$", out, re.M)
    assert match is not None, out
    key = match.group(1)
    assert is_well_formed(key)
    assert "cannot be shown again" in out
    created = re.search(r"created key ([0-9a-f-]{36}) \((dmc_live_\w{3})\)", out)
    assert created is not None and created.group(2) == key[:12], out
    key_id = created.group(1)
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    assert await stored_hashes(database) == [key_hash]

    code, out = await keys(cli_env, tmp_path, "list")
    assert code == 0, out
    header, row = out.splitlines()
    assert header.split() == "ID PREFIX NAME SCOPES STATUS LAST USED REQUESTS".split()
    expected = f"{key_id} {key[:12]} CRM sync read:contacts active never 0"
    assert row.split() == expected.split()
    assert key not in out and key_hash not in out

    code, out = await keys(
        cli_env,
        tmp_path,
        "update",
        key_id,
        "--scope",
        "a",
        "--scope",
        "b",
        "--clear-allowed-ips",
        "--rate-limit-per-minute",
        "5",
        "--expires-in-days",
        "7",
    )
    assert code == 0, out
    assert f"updated {key_id} ({key[:12]})" in out
    assert "scopes: a, b" in out and "rate_limit_per_minute: 5" in out
    assert "allowed_ips: any" in out and "expires_at: never" not in out
    assert key not in out and key_hash not in out

    code, out = await keys(cli_env, tmp_path, "revoke", key_id, "--by", USER)
    assert (code, out) == (0, f"revoked {key_id} ({key[:12]})\n")
    code, out = await keys(cli_env, tmp_path, "revoke", key_id)
    assert (code, out) == (1, f"modgate: error: no active key {key_id}\n")

    code, out = await keys(cli_env, tmp_path, "list")
    assert (code, out) == (0, "no keys\n")
    code, out = await keys(cli_env, tmp_path, "list", "--all", "--json")
    assert code == 0, out
    [listed] = json.loads(out)
    assert listed["status"] == "revoked" and listed["scopes"] == ["a", "b"]
    assert "key_hash" not in listed and key not in out and key_hash not in out


async def test_create_json(cli_env: dict[str, str], database: str, tmp_path: Path) -> None:
    code, out = await keys(
        cli_env, tmp_path, "create", *IDENTITY, "--name", "ci", "--expires-in-days", "1", "--json"
    )
    assert code == 0, out
    created = json.loads(out)
    assert set(created) == {
        "id",
        "key",
        "key_prefix",
        "name",
        "module_id",
        "site_id",
        "scopes",
        "expires_at",
        "created_at",
    }
    assert is_well_formed(created["key"]) and created["key_prefix"] == created["key"][:12]
    assert (created["module_id"], created["site_id"], created["scopes"]) == (MODULE, SITE, [])
    assert created["expires_at"] > created["created_at"]
    assert await stored_hashes(database) == [hashlib.sha256(created["key"].encode()).hexdigest()]

    code, out = await keys(cli_env, tmp_path, "list", "--module", MODULE, "--json")
    assert code == 0, out
    [listed] = json.loads(out)
    assert (listed["id"], listed["key_prefix"], listed["status"]) == (
        created["id"],
        created["key_prefix"],
        "active",
    )
    assert created["key"] not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("create", "--module", "crm", "--site", SITE, "--agency", AGENCY, "--name", "x"),
            "--module: 'crm' is not a UUID",
        ),
        (
            ("create", *IDENTITY, "--name", "x", "--allowed-ip", "10.0.0.300"),
            "--allowed-ip: '10.0.0.300' is not an IP address or CIDR network",
        ),
        (
            ("create", *IDENTITY, "--name", "x", "--allowed-origin", "https://a.example/app"),
            "--allowed-origin: 'https://a.example/app' is not an origin: expected '*' or "
            "scheme://host[:port] without a path",
        ),
        (
            ("create", *IDENTITY, "--name", "x", "--rate-limit-per-minute", "many"),
            "--rate-limit-per-minute: expected a whole number, got 'many'",
        ),
        (
            ("create", *IDENTITY, "--name", "x", "--rate-limit-per-day", "0"),
            "--rate-limit-per-day: expected a whole number from 1 to 2147483647, got 0",
        ),
        (("create", *IDENTITY, "--name", " "), "--name: must not be empty"),
        (("revoke", "k1"), "KEY_ID: 'k1' is not a UUID"),
        (
            ("update", MODULE, "--expires-in-days", "0"),
            "--expires-in-days: expected a whole number from 1 to 36500, got 0",
        ),
        (
            ("update", MODULE, "--scope", "a", "--clear-scopes"),
            "--scope and --clear-scopes exclude each other",
        ),
        (("update", MODULE), "nothing to update: give at least one setting to change (see --help)"),
    ],
)
async def test_bad_values_exit_2_with_one_line(
    cli_env: dict[str, str], database: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    code, out = await keys(cli_env, tmp_path, *args)
    assert (code, out) == (2, f"modgate: error: {message}\n")
    assert await stored_hashes(database) == []


async def test_unknown_key(cli_env: dict[str, str], tmp_path: Path) -> None:
    code, out = await keys(cli_env, tmp_path, "revoke", MODULE)
    assert (code, out) == (1, f"modgate: error: no active key {MODULE}\n")
    code, out = await keys(cli_env, tmp_path, "update", MODULE, "--name", "x")
    assert (code, out) == (1, f"modgate: error: no key {MODULE}\n")


async def test_without_database_url(tmp_path: Path) -> None:
    code, out = await run_cli("keys", "list", env={"MODGATE_DATABASE_URL": ""}, cwd=str(tmp_path))
    assert code == 2
    assert out.startswith("modgate: error: database_url: required for this command"), out


async def test_unreachable_database_exits_1_without_password(tmp_path: Path) -> None:
    from tests.support.process import free_port

    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/nowhere"
    code, out = await run_cli("keys", "list", "--database-url", url, cwd=str(tmp_path))
    assert code == 1, out
    assert out.startswith("modgate: error: cannot connect to Postgres at 127.0.0.1:")
    assert "s3cret" not in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("keys", "--help"), "create"),
        (("keys", "create", "--help"), "cannot be shown again"),
        (("keys", "create", "--help"), "without scopes can call only routes"),
        (("keys", "list", "--help"), "--all"),
        (("keys", "revoke", "--help"), "exits 1"),
        (("keys", "update", "--help"), "--clear-allowed-origins"),
    ],
)
async def test_help(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    code, out = await run_cli(*args, cwd=str(tmp_path))
    assert code == 0, out
    assert expected in " ".join(out.split()), out
