"""`modgate serve` on the embedded default, as a subprocess: what a newcomer runs first."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.gateway import MODULE_ID
from tests.support.process import ServeProcess, run_cli, vm_hwm_kib

REPO = Path(__file__).resolve().parents[1]


def _write_routes(path: Path, upstream: str, extra: list[dict[str, Any]] | None = None) -> None:
    routes = [
        {
            "path": "/hello",
            "method": "GET",
            "handler_type": "static",
            "handler_code": '{"v": 1}',
            "requires_auth": False,
        },
        {"path": "/*", "method": "GET", "handler_type": "proxy"},
        {"path": "/*", "method": "POST", "handler_type": "proxy"},
        *(extra or []),
    ]
    routes = [{"requires_auth": False, **route} for route in routes]
    data = {"modules": [{"id": MODULE_ID, "name": "crm", "upstream": upstream, "routes": routes}]}
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
async def serve(tmp_path: Path, upstream: Any) -> Any:
    started: list[ServeProcess] = []
    routes = tmp_path / "routes.yaml"
    _write_routes(routes, upstream[0])

    async def start(*args: str, **env: str) -> ServeProcess:
        proc = ServeProcess(
            "--routes-file",
            str(routes),
            *args,
            env={"MODGATE_ROUTES_POLL_SECONDS": "0.1", **env},
            cwd=str(tmp_path),
        )
        started.append(proc)
        return await proc.start()

    yield start
    for proc in started:
        await proc.stop()


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.json()


async def test_readme_example_routes_work(tmp_path: Path) -> None:
    # The checked-in example, as the README runs it (its self-proxy needs port 8080 only for
    # the /via-proxy route, so this test exercises the routes that do not depend on the port).
    proc = ServeProcess("--routes-file", str(REPO / "config/routes.yaml"), cwd=str(REPO))
    await proc.start()
    try:
        status, body = await _get(f"{proc.url}/api/modules/demo/hello")
        assert (status, body) == (200, {"message": "hello from modgate"})
        demo_key = "dmc_live_" + "0123456789abcdef" * 4  # the README's demo key
        async with aiohttp.ClientSession() as s:
            url = f"{proc.url}/api/modules/demo/whoami"
            async with s.get(url, headers={"X-API-Key": demo_key}) as r:
                assert (r.status, await r.json()) == (200, {"message": "your key works"})
            async with s.get(url) as r:
                assert r.status == 401
        status, body = await _get(f"{proc.url}/api/modules/demo/nope")
        assert status == 404 and body["code"] == "route_not_found"
        status, body = await _get(f"{proc.admin_url}/readyz")
        assert status == 200
    finally:
        await proc.stop()


async def test_serves_static_and_proxy(serve: Any) -> None:
    proc = await serve()
    assert await _get(f"{proc.url}/api/modules/crm/hello") == (200, {"v": 1})
    status, seen = await _get(f"{proc.url}/api/modules/crm/contacts/7?a=b")
    assert status == 200 and seen["raw_path"] == "/contacts/7?a=b"


async def test_file_change_reloads_and_bad_edit_keeps_last_good(
    serve: Any, tmp_path: Path, upstream: Any
) -> None:
    proc = await serve()
    routes = tmp_path / "routes.yaml"
    _write_routes(
        routes,
        upstream[0],
        [
            {"path": "/new", "method": "GET", "handler_type": "static", "handler_code": '"new"'},
        ],
    )
    for _ in range(100):
        status, _ = await _get(f"{proc.url}/api/modules/crm/new")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200
    routes.write_text("modules: [ {id: not-a-uuid")  # broken YAML
    await asyncio.sleep(0.5)
    assert (await _get(f"{proc.url}/api/modules/crm/new"))[0] == 200
    assert (await _get(f"{proc.admin_url}/readyz"))[0] == 200


async def test_sighup_reloads(serve: Any, tmp_path: Path, upstream: Any) -> None:
    proc = await serve("--config", str(tmp_path / "gw.yaml"), MODGATE_ROUTES_POLL_SECONDS="3600")
    routes = tmp_path / "routes.yaml"
    _write_routes(
        routes,
        upstream[0],
        [
            {"path": "/hup", "method": "GET", "handler_type": "static", "handler_code": "ok"},
        ],
    )
    proc.signal(signal.SIGHUP)
    for _ in range(100):
        async with aiohttp.ClientSession() as s, s.get(f"{proc.url}/api/modules/crm/hup") as r:
            if r.status == 200:
                break
        await asyncio.sleep(0.05)
    assert r.status == 200


@pytest.fixture(autouse=True)
def _gw_config(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text("{}\n")


async def test_sigterm_drains_in_flight_requests(serve: Any) -> None:
    proc = await serve()
    async with aiohttp.ClientSession() as s:
        slow = asyncio.create_task(s.get(f"{proc.url}/api/modules/crm/slow?s=1"))
        await asyncio.sleep(0.3)
        proc.signal(signal.SIGTERM)
        response = await slow
        assert response.status == 200
        assert await response.json() == {"slow": True}
    assert await proc.wait() == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(f"{proc.url}/api/modules/crm/hello")


async def test_workers_share_the_port_and_stop_cleanly(serve: Any) -> None:
    proc = await serve("--workers", "2")
    for _ in range(20):
        assert (await _get(f"{proc.url}/api/modules/crm/hello"))[0] == 200
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_big_upload_is_streamed_not_buffered(serve: Any, upstream: Any) -> None:
    proc = await serve("--workers", "1", MODGATE_MAX_BODY_BYTES="0")
    assert proc.proc is not None
    size = 1 << 30

    async def body() -> Any:
        block = b"m" * (1 << 20)
        for _ in range(size >> 20):
            yield block

    async with aiohttp.ClientSession() as s:
        async with s.post(f"{proc.url}/api/modules/crm/upload", data=body()) as r:
            seen = await r.json()
    assert seen["body_bytes"] == size
    peak_mib = vm_hwm_kib(proc.proc.pid) / 1024
    print(f"\ngateway peak RSS after a {size >> 20} MiB upload: {peak_mib:.1f} MiB")
    assert peak_mib < 150


async def test_bad_setting_exits_2_naming_the_key(tmp_path: Path) -> None:
    code, out = await run_cli("serve", env={"MODGATE_WORKERS": "abc"}, cwd=str(tmp_path))
    assert code == 2
    assert out.strip() == (
        "modgate: error: workers: expected an integer >= 1, got 'abc' (from MODGATE_WORKERS)"
    )


async def test_bad_routes_file_at_start_exits_2(tmp_path: Path) -> None:
    routes = tmp_path / "r.yaml"
    routes.write_text("modules:\n  - id: 1\n")
    proc = ServeProcess("--routes-file", str(routes), cwd=str(tmp_path))
    await proc.start(wait_ready=False)
    assert await proc.wait() == 2
    assert "modules[0].id: expected a UUID, got 1" in await proc.output()


async def test_port_in_use_exits_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = await run_cli("serve", "--listen", f"127.0.0.1:{port}", cwd=str(REPO))
    assert code == 2
    assert "cannot listen" in out


async def test_help_lists_settings() -> None:
    code, out = await run_cli("serve", "--help")
    assert code == 0
    assert "MODGATE_DATABASE_URL" in out and "--workers" in out


async def test_short_jwt_secret_is_refused_at_start(tmp_path: Path) -> None:
    code, out = await run_cli(
        "serve", "--routes-file", str(REPO / "config/routes.yaml"),
        env={"MODGATE_JWT_SECRET": "short"}, cwd=str(tmp_path),
    )  # fmt: skip
    assert code == 2
    assert "jwt_secret: at least 32 bytes needed for HS256" in out
    assert "short" not in out.replace("jwt_secret", "")


async def _raw_exchange(
    port: int, head: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def test_expect_100_continue_is_answered_after_the_checks(serve: Any) -> None:
    proc = await serve(MODGATE_MAX_BODY_BYTES="100")
    head = (
        "POST /api/modules/crm/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
    )
    # Within the limit: the gateway invites the body, then forwards it whole.
    reader, writer = await _raw_exchange(proc.port, head.format(n=5).encode())
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
    writer.write(b"hello")
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert final.startswith(b"HTTP/1.1 200")
    length = int(final.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    seen = json.loads(await reader.readexactly(length))
    assert seen["body_bytes"] == 5
    assert not any(name.lower() == "expect" for name, _ in seen["headers"])
    writer.close()
    # Over the limit: refused at once, the body never invited.
    reader, writer = await _raw_exchange(proc.port, head.format(n=1000).encode())
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert final.startswith(b"HTTP/1.1 413")
    writer.close()
