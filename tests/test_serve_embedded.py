"""`modgate serve` on the embedded default, as a subprocess: what a newcomer runs first."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.docs.markdown import code_blocks
from tests.support.gateway import MODULE_ID
from tests.support.polling import eventually
from tests.support.process import ServeProcess, free_port, run_cli, vm_hwm_kib

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


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


def _readme_quick_start() -> list[tuple[str, str]]:
    """The README's quick-start curl lines (continuations joined), each with its comment."""
    block = next(b for b in code_blocks(README.read_text(), "sh") if "curl" in b)
    lines = re.sub(r"\\\n\s*", "", block).splitlines()
    return [
        (cmd.strip(), note.strip()) for cmd, _, note in (line.partition(" # ") for line in lines)
    ]


async def test_readme_quick_start_lines_work_on_any_port(tmp_path: Path) -> None:
    # `make run` is `modgate serve` in the repository; here both ports are not the defaults
    # (8080, 9090), and every line must still answer what its comment says (the /via-proxy
    # route once pointed at 127.0.0.1:8080 whatever `listen` was, and answered 502).
    proc = ServeProcess(cwd=str(REPO))
    await proc.start()
    lines = _readme_quick_start()
    assert len(lines) == 6
    try:
        for command, note in lines:
            command = command.replace("localhost:8080", f"127.0.0.1:{proc.port}")
            command = command.replace("localhost:9090", f"127.0.0.1:{proc.admin_port}")
            run = await asyncio.create_subprocess_shell(
                command + " --silent --show-error --max-time 10",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out = (await run.communicate())[0].decode()
            assert run.returncode == 0, (command, out)
            if " -i " not in command:  # /readyz: the body only
                assert json.loads(out)["status"] == "ready", out
                continue
            head, _, body = out.partition("\r\n\r\n")
            status = int(head.split()[1])
            stated = re.search(r"\b([1-5]\d\d)\b", note)  # "401: ...", "200 with the demo key"
            assert status == (int(stated[1]) if stated else 200), (command, out)
            if "hello" in command:  # static, and the same through the proxy path
                assert json.loads(body) == {"message": "hello from modgate"}, (command, out)
    finally:
        await proc.stop()


async def test_serve_outside_the_repository_names_the_routes_file_setting(
    tmp_path: Path,
) -> None:
    code, out = await run_cli(
        "serve", "--listen", f"127.0.0.1:{free_port()}", "--admin-listen",
        f"127.0.0.1:{free_port()}", cwd=str(tmp_path),
    )  # fmt: skip
    assert code == 2
    assert (
        f"config/routes.yaml: file not found (relative to {tmp_path}); the routes_file setting "
        "names the routes manifest (MODGATE_ROUTES_FILE, modgate serve --routes-file), or set "
        "database_url to serve routes from Postgres"
    ) in out


async def test_routes_check_accepts_the_demo_and_apply_refuses_listen(tmp_path: Path) -> None:
    # `{listen}` is an embedded gateway's own address: rows in Postgres have no such thing.
    demo = str(REPO / "config/routes.yaml")
    code, out = await run_cli("routes", "check", "-f", demo, cwd=str(tmp_path))
    assert (code, out.strip()) == (0, f"{demo}: 1 modules, 4 routes, no conflicts")
    code, out = await run_cli("routes", "apply", "-f", demo, cwd=str(tmp_path))
    assert code == 2
    assert out.strip() == (
        f"modgate: error: {demo}: modules[0].routes[1].handler_url: {{listen}} is resolved only "
        "by a gateway serving this file (routes_file) on a fixed port (listen not port 0); write "
        "the address"
    )


async def test_sidecar_without_its_module_is_not_ready_and_says_why(
    tmp_path: Path, upstream: Any
) -> None:
    proc = ServeProcess(
        "--routes-file", str(tmp_path / "routes.yaml"), "--mode", "sidecar",
        "--sidecar-module", "billing", env={"MODGATE_ROUTES_POLL_SECONDS": "0.1"},
        cwd=str(tmp_path),
    )  # fmt: skip
    _write_routes(tmp_path / "routes.yaml", upstream[0])  # module `crm` only
    await proc.start(wait_ready=False)
    try:

        async def readyz() -> tuple[int, Any]:
            return await _get(f"{proc.admin_url}/readyz")

        status, body = await eventually(readyz, ignore=(aiohttp.ClientError,), what="/readyz")
        assert status == 503
        assert body["error"] == "sidecar_module 'billing' is not among the loaded modules"
        error = (
            "ERROR [{pid}] modgate.routes: sidecar_module 'billing' is not among the loaded "
            "modules, so this sidecar is not ready (every path would answer 404); "
            f"loaded: crm ({MODULE_ID})"
        )
        assert proc.proc is not None
        assert error.format(pid=proc.proc.pid) in proc.output_so_far()
        # The module arrives with the next edit: ready, and said so.
        data = yaml.safe_load((tmp_path / "routes.yaml").read_text())
        data["modules"][0]["name"] = "billing"
        (tmp_path / "routes.yaml").write_text(yaml.safe_dump(data))
        await eventually(readyz, until=lambda r: r[0] == 200, what="ready once loaded")
        assert "sidecar_module 'billing' is loaded" in proc.output_so_far()
        assert (await _get(f"{proc.url}/hello")) == (200, {"v": 1})
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
    await eventually(
        lambda: _get(f"{proc.url}/api/modules/crm/new"),
        until=lambda answer: answer[0] == 200,
        what="the new route is served",
    )
    routes.write_text("modules: [ {id: not-a-uuid")  # broken YAML
    await eventually(
        lambda: "routes file not reloaded, last good tables kept" in proc.output_so_far(),
        what="the broken edit is seen and refused",
    )
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

    async def hup_status() -> int:
        async with aiohttp.ClientSession() as s, s.get(f"{proc.url}/api/modules/crm/hup") as r:
            return r.status

    await eventually(hup_status, until=lambda status: status == 200, what="/hup after SIGHUP")


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


async def test_no_response_names_software_versions(serve: Any) -> None:
    proc = await serve()
    async with aiohttp.ClientSession() as session:
        for url in (
            f"{proc.url}/api/modules/crm/hello",  # the gateway's own answer
            f"{proc.url}/api/modules/crm/via-upstream",  # an aiohttp upstream's, relayed
            f"{proc.url}/api/modules/nothing/x",  # an error
            f"{proc.admin_url}/healthz",
            f"{proc.admin_url}/nowhere",
        ):
            async with session.get(url) as r:
                assert r.headers.getall("Server") == ["modgate"], url
    # A head llhttp refuses, answered by the edge before any pipeline.
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")
    head = (await reader.read(4096)).split(b"\r\n\r\n")[0].lower()
    writer.close()
    assert head.startswith(b"http/1.1 400") and b"\r\nserver: modgate" in head, head


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


@pytest.mark.parametrize(
    ("command", "setting"),
    [("serve", "listen"), ("serve", "admin_listen"), ("executor", "executor_listen")],
)
async def test_port_in_use_exits_2_naming_the_setting(command: str, setting: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The others free: the manifest's {listen} needs a fixed public port.
        addresses = {"listen": f"127.0.0.1:{free_port()}", "admin_listen": "127.0.0.1:0"}
        addresses[setting] = f"127.0.0.1:{port}"
        args = [f"--{name.replace('_', '-')}={value}" for name, value in addresses.items()]
        if command == "executor":
            args = [f"--executor-listen=127.0.0.1:{port}", "--executor-workers=1"]
        code, out = await run_cli(command, *args, cwd=str(REPO))
    env = "MODGATE_" + setting.upper()
    flag = "--" + setting.replace("_", "-")
    assert code == 2, out
    assert (
        f"cannot listen on 127.0.0.1:{port} ({setting}: {env} or {flag}): "
        "[Errno 98] Address already in use\n"
    ) in out


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
