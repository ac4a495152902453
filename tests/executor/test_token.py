"""The executor runs whatever code it is given: with executor_token set, only callers that
know it (the gateways) can make it. A gateway whose token is not the pool's is misconfigured:
its clients get a 502, and both sides log what to fix."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from proxy.executor.client import TOKEN_HEADER, ExecutorClient
from proxy.executor.service import Executor, build_executor_app
from proxy.request_context import RequestContext
from proxy.settings import load_settings
from proxy.upstream.pool import UpstreamPool
from tests.support.gateway import gateway_for, manifest
from tests.support.polling import eventually

CALL = {
    "module_id": "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21",
    "site_id": None,
    "handler_key": "t:1",
    "code": "return 'ran';",
}
TOKEN = "a-long-shared-secret-between-gateway-and-pool"


def _refused_calls() -> float:
    sample = REGISTRY.get_sample_value(
        "modgate_handler_pool_requests_total", {"result": "unauthorized"}
    )
    return sample or 0.0


async def test_calls_without_the_token_are_refused(aiohttp_server: Any, tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text("{}\n")
    settings = load_settings(
        str(tmp_path / "gw.yaml"), environ={}, overrides={"executor_token": TOKEN}
    )
    server = await aiohttp_server(build_executor_app(Executor(settings)))
    url = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {TOKEN_HEADER: "guess"}, {TOKEN_HEADER: TOKEN[:-1]}):
            async with session.post(f"{url}/v1/execute", json=CALL, headers=headers) as r:
                assert r.status == 401
                assert (await r.json())["code"] == "unauthorized"
    pool = UpstreamPool(max_connections=4, keepalive_seconds=5, connect_timeout=1, timeout=5)
    try:
        client = ExecutorClient(pool, url, token=TOKEN)
        response = await client.call(CALL, RequestContext("rid", started=0.0))
        assert (response.status, response.body) == (200, b'"ran"')
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("gateway_token", "sent"),
    [("not-the-pools-token", "a different one"), (None, "none (executor_token is unset here)")],
    ids=["different", "unset"],
)
async def test_a_token_mismatch_is_a_502_and_an_error_line_on_the_gateway(
    gateway_token: str | None,
    sent: str,
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    caplog: Any,
) -> None:
    # The client did nothing wrong: it must not see the pool's 401 "Missing or invalid
    # executor token"; the operator must see what to fix, on the gateway and on the pool.
    (tmp_path / "pool.yaml").write_text("{}\n")
    pool_settings = load_settings(
        str(tmp_path / "pool.yaml"), environ={}, overrides={"executor_token": TOKEN}
    )
    pool = await aiohttp_server(build_executor_app(Executor(pool_settings)))
    route = {
        "path": "/run",
        "method": "GET",
        "handler_type": "function",
        "handler_code": "return 1;",
    }
    gateway, app = gateway_for(
        tmp_path,
        manifest(None, [route]),
        executor_url=f"http://127.0.0.1:{pool.port}",
        executor_token=gateway_token,
    )
    client = await aiohttp_client(app)
    await eventually(lambda: gateway.ready, what="the gateway is ready")
    before = _refused_calls()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        r = await client.get("/api/modules/crm/run", headers={"X-Request-ID": "req-token"})
    assert r.status == 502
    assert await r.json() == {
        "error": "The handler pool refused this gateway",
        "code": "executor_unauthorized",
        "request_id": "req-token",
    }
    assert _refused_calls() == before + 1
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert (
        "ERROR",
        f"the handler pool at http://127.0.0.1:{pool.port}/v1/execute refused this gateway's "
        f"executor_token (sent: {sent}): set the same executor_token (MODGATE_EXECUTOR_TOKEN) on "
        "the gateways and the executor (request req-token)",
    ) in lines
    assert (
        "WARNING",
        f"refused a call from 127.0.0.1 without the right executor_token ({TOKEN_HEADER} header)",
    ) in lines
