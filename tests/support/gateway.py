"""Build an in-process gateway (the real app, the real pipeline) over a routes manifest or a
seeded database."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from proxy.executor.service import Executor, build_executor_app
from proxy.server.app import build_public_app
from proxy.server.gateway import Gateway
from proxy.settings import Settings, load_settings
from tests.support.polling import eventually

MODULE_ID = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"


def manifest(upstream: str | None, routes: list[dict[str, Any]], **module: Any) -> dict[str, Any]:
    """One module `crm`; routes are anonymous unless they say otherwise (auth tests do)."""
    routes = [{"requires_auth": False, **route} for route in routes]
    entry: dict[str, Any] = {"id": MODULE_ID, "name": "crm", "routes": routes, **module}
    if upstream is not None:
        entry["upstream"] = upstream
    return {"modules": [entry]}


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Settings from an empty config file and `overrides`, as a test's gateway or pool runs."""
    config = tmp_path / "gateway.yaml"
    config.write_text("{}\n")
    # Rate limits are off unless a test is about them: polling tests would hit them.
    return load_settings(
        str(config),
        environ={},
        overrides={"rate_limit_enabled": False, "access_log": False, **overrides},
    )


def gateway_for(
    tmp_path: Path, data: Mapping[str, Any], **overrides: object
) -> tuple[Gateway, Any]:
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(dict(data)))
    gateway = Gateway(settings_for(tmp_path, routes_file=str(routes_file), **overrides))
    return gateway, build_public_app(gateway)


async def serve_database(
    aiohttp_client: Any, tmp_path: Path, database: str, **overrides: object
) -> tuple[Any, Gateway]:
    """A gateway in Postgres mode on `database` (seeded by the test) under `aiohttp_client`,
    once it has loaded its tables; returns (the client, the gateway)."""
    gateway = Gateway(settings_for(tmp_path, database_url=database, **overrides))
    client = await aiohttp_client(build_public_app(gateway))
    await eventually(lambda: gateway.ready, what="the gateway loaded its tables")
    return client, gateway


async def serve_database_with_pool(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path, database: str, **overrides: object
) -> tuple[Any, Gateway]:
    """`serve_database`, with a real handler pool in-process under the same settings."""
    pool_settings = settings_for(tmp_path, database_url=database, **overrides)
    pool = await aiohttp_server(build_executor_app(Executor(pool_settings)))
    return await serve_database(
        aiohttp_client,
        tmp_path,
        database,
        executor_url=f"http://127.0.0.1:{pool.port}",
        **overrides,
    )
