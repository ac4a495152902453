"""The executor runs whatever code it is given: with executor_token set, only callers that
know it (the gateways) can make it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from proxy.executor.client import TOKEN_HEADER, ExecutorClient
from proxy.executor.service import Executor, build_executor_app
from proxy.request_context import RequestContext
from proxy.settings import load_settings
from proxy.upstream.pool import UpstreamPool

CALL = {
    "module_id": "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21",
    "site_id": None,
    "handler_key": "t:1",
    "code": "return 'ran';",
}
TOKEN = "a-long-shared-secret-between-gateway-and-pool"


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
