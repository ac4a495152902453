"""/readyz and the limiter's Redis connections: ready only once they are open and the script
loaded; after that, readiness follows the failure policy (only `closed` with Redis down makes
a gateway unready)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis.asyncio as redis

from proxy.ratelimit.redis_limiter import CONNECTIONS
from proxy.server.app import build_admin_app
from tests.support.gateway import gateway_for, manifest
from tests.support.redis_server import RedisServer


async def _start(aiohttp_client: Any, tmp_path: Path, redis: RedisServer, policy: str) -> Any:
    routes = [{"path": "/a", "method": "GET", "handler_type": "static", "handler_code": "1"}]
    gateway, app = gateway_for(
        tmp_path,
        manifest(None, routes),
        rate_limit_enabled=True,
        redis_url=redis.url,
        redis_failure_policy=policy,
        # The first failure opens the circuit: these tests are about what readiness says then.
        redis_circuit_failures=1,
        redis_circuit_window_seconds=0,
        redis_circuit_cooldown_seconds=0.05,
    )
    client = await aiohttp_client(app)
    admin = await aiohttp_client(build_admin_app(gateway))
    return client, admin


async def test_ready_once_connections_are_open_and_the_script_loaded(
    aiohttp_client: Any, tmp_path: Path, private_redis: RedisServer
) -> None:
    _, admin = await _start(aiohttp_client, tmp_path, private_redis, "local")
    r = await admin.get("/readyz")
    assert r.status == 200 and (await r.json())["redis"] == "ok"
    # Before any request: the limiter's connections are open and the script is loaded.
    server = redis.from_url(private_redis.url)
    try:
        commands = await server.info("commandstats")
        assert commands["cmdstat_script|load"]["calls"] == CONNECTIONS
        assert "cmdstat_evalsha" not in commands
        assert len(await server.client_list()) == CONNECTIONS + 1  # and this one
    finally:
        await server.aclose()


async def test_closed_policy_with_redis_down_is_not_ready(
    aiohttp_client: Any, tmp_path: Path, private_redis: RedisServer
) -> None:
    client, admin = await _start(aiohttp_client, tmp_path, private_redis, "closed")
    r = await admin.get("/readyz")
    assert r.status == 200 and (await r.json())["redis"] == "ok"
    private_redis.kill()
    r = await client.get("/api/modules/crm/a")
    assert r.status == 503 and (await r.json())["code"] == "service_unavailable"
    r = await admin.get("/readyz")
    assert r.status == 503
    assert (await r.json())["error"] == "Redis is failing and redis_failure_policy is closed"
    private_redis.restart()
    for _ in range(200):
        await asyncio.sleep(0.06)  # past the cooldown: the next request probes Redis
        if (await client.get("/api/modules/crm/a")).status == 200:
            break
    assert (await admin.get("/readyz")).status == 200


async def test_closed_policy_with_redis_down_at_start_is_not_ready(
    aiohttp_client: Any, tmp_path: Path, private_redis: RedisServer
) -> None:
    private_redis.kill()
    client, admin = await _start(aiohttp_client, tmp_path, private_redis, "closed")
    r = await admin.get("/readyz")
    assert r.status == 503
    assert (await r.json())["error"] == "Redis is failing and redis_failure_policy is closed"
    private_redis.restart()  # connections opened in the background, then a probe closes it
    for _ in range(200):
        await asyncio.sleep(0.06)
        if (await client.get("/api/modules/crm/a")).status == 200:
            break
    assert (await admin.get("/readyz")).status == 200


async def test_local_policy_with_redis_down_stays_ready(
    aiohttp_client: Any, tmp_path: Path, private_redis: RedisServer
) -> None:
    client, admin = await _start(aiohttp_client, tmp_path, private_redis, "local")
    private_redis.kill()
    assert (await client.get("/api/modules/crm/a")).status == 200
    r = await admin.get("/readyz")
    assert r.status == 200
    assert (await r.json())["redis"] == "failing (local policy)"
