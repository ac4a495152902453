"""The Postgres mode through the console script, as a platform team drives it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import asyncpg
import yaml

from tests.support.gateway import MODULE_ID
from tests.support.polling import eventually
from tests.support.process import ServeProcess, run_cli


def _manifest(path: Path, body: str, *, extra: bool = True) -> None:
    routes = [{"path": "/hello", "method": "GET", "handler_type": "static", "handler_code": body}]
    if extra:
        routes.append(
            {"path": "/gone-later", "method": "GET", "handler_type": "static", "handler_code": "x"}
        )
    for route in routes:
        route["requires_auth"] = False
    data = {"modules": [{"id": MODULE_ID, "name": "crm", "routes": routes}]}
    path.write_text(yaml.safe_dump(data))


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def test_migrate_apply_serve_and_reapply(blank_database: str, tmp_path: Path) -> None:
    env = {"MODGATE_DATABASE_URL": blank_database}
    cwd = str(tmp_path)

    code, out = await run_cli("migrate", env=env, cwd=cwd)
    assert (code, out.splitlines()) == (
        0,
        [
            "applied 0001_initial",
            "applied 0002_forward_credentials",
            "applied 0003_encoded_slashes",
            "applied 0004_entities",
            "applied 0005_api_consumers",
            "applied 0006_consumer_secrets",
        ],
    )
    code, out = await run_cli("migrate", env=env, cwd=cwd)
    assert (code, out.strip()) == (0, "schema is up to date")

    manifest = tmp_path / "crm.yaml"
    _manifest(manifest, '"v1"')
    code, out = await run_cli("routes", "apply", "-f", str(manifest), env=env, cwd=cwd)
    assert code == 0, out
    assert out.strip() == f"module {MODULE_ID}: 2 routes upserted, 0 deactivated"

    proc = ServeProcess(env=env, cwd=cwd)
    await proc.start()
    try:
        assert await _get(f"{proc.url}/api/modules/crm/hello") == (200, '"v1"')
        _manifest(manifest, '"v2"', extra=False)
        code, out = await run_cli("routes", "apply", "-f", str(manifest), env=env, cwd=cwd)
        assert out.strip() == f"module {MODULE_ID}: 1 routes upserted, 1 deactivated"
        await eventually(
            lambda: _get(f"{proc.url}/api/modules/crm/hello"),
            until=lambda answer: answer == (200, '"v2"'),
            what="the reapplied route answers v2",
        )
        assert (await _get(f"{proc.url}/api/modules/crm/gone-later"))[0] == 404
    finally:
        await proc.stop()
    assert await proc.wait() == 0

    conn = await asyncpg.connect(blank_database)
    try:
        active = await conn.fetchval(
            "SELECT is_active FROM module_api_routes WHERE path = '/gone-later'"
        )
    finally:
        await conn.close()
    assert active is False


async def test_apply_refuses_conflicting_manifest_before_touching_the_db(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    routes = [
        {"path": "/c/:id", "method": "GET", "handler_type": "static", "handler_code": "1"},
        {"path": "/c/:cid", "method": "GET", "handler_type": "static", "handler_code": "2"},
    ]
    manifest.write_text(yaml.safe_dump({"modules": [{"id": MODULE_ID, "routes": routes}]}))
    env = {"MODGATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    code, out = await run_cli("routes", "apply", "-f", str(manifest), env=env, cwd=str(tmp_path))
    assert code == 2
    assert out.strip() == (
        f"modgate: error: {manifest}: module {MODULE_ID}: GET /c/:cid conflicts with GET /c/:id: "
        "both match the same paths with the same precedence"
    )
    code, out = await run_cli("routes", "check", "-f", str(manifest), cwd=str(tmp_path))
    assert code == 2


async def test_migrate_without_database_url_and_with_dead_postgres(tmp_path: Path) -> None:
    code, out = await run_cli("migrate", cwd=str(tmp_path))
    assert code == 2
    assert "database_url: required for this command" in out
    code, out = await run_cli(
        "migrate",
        env={"MODGATE_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/db"},
        cwd=str(tmp_path),
    )
    assert code == 1
    assert out.startswith("modgate: error: cannot connect to Postgres at 127.0.0.1:1/db")
    assert "hunter2" not in out


async def test_cli_created_key_works_through_a_running_gateway_until_revoked(
    database: str, tmp_path: Path
) -> None:
    env = {"MODGATE_DATABASE_URL": database}
    cwd = str(tmp_path)
    manifest = tmp_path / "crm.yaml"
    routes = [
        {"path": "/contacts/:id", "method": "GET", "handler_type": "static",
         "handler_code": '{"id": 1}', "required_scopes": ["read:contacts"]},
    ]  # fmt: skip
    manifest.write_text(
        yaml.safe_dump({"modules": [{"id": MODULE_ID, "name": "crm", "routes": routes}]})
    )
    code, out = await run_cli("routes", "apply", "-f", str(manifest), env=env, cwd=cwd)
    assert code == 0, out
    site, agency = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d", "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
    code, out = await run_cli(
        "keys", "create", "--module", MODULE_ID, "--site", site, "--agency", agency,
        "--name", "integration", "--scope", "read:*", "--json", env=env, cwd=cwd,
    )  # fmt: skip
    assert code == 0, out
    created = json.loads(out)

    proc = ServeProcess(env=env, cwd=cwd)
    await proc.start()
    try:
        url = f"{proc.url}/api/modules/crm/contacts/1"
        async with aiohttp.ClientSession() as s:
            async with s.get(url, headers={"X-API-Key": created["key"]}) as r:
                assert (r.status, await r.json()) == (200, {"id": 1})
            async with s.get(url) as r:
                assert r.status == 401
            code, out = await run_cli("keys", "revoke", created["id"], env=env, cwd=cwd)
            assert code == 0, out
            revoked_at = time.perf_counter()

            async def status_with_key() -> int:
                async with s.get(url, headers={"X-API-Key": created["key"]}) as r:
                    return r.status

            await eventually(
                status_with_key,
                until=lambda status: status == 401,
                timeout=5,
                interval=0.005,
                what="the revoked key is refused",
            )
            print(
                f"\nrevoked with the CLI: refused {1000 * (time.perf_counter() - revoked_at):.0f}"
                " ms after the command returned"
            )
    finally:
        await proc.stop()
    logs = await proc.output()
    assert created["key"] not in logs
    assert created["key_prefix"] in logs  # the refusal is logged, by prefix only
