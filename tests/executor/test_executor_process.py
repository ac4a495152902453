"""`modgate executor` as a process tree: a killed worker is replaced, the pool keeps serving."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.support.polling import eventually
from tests.support.process import free_port, run_cli

MODGATE = str(Path(sys.executable).with_name("modgate"))
CALL = {
    "module_id": "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21",
    "site_id": None,
    "handler_key": "r:1",
    "code": "return { ok: true, n: 1 + 1 };",
}


def _children(pid: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if not path.exists():
        return []
    workers = []
    for child in path.read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(int(child))
    return workers


async def _call(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/execute", json=CALL) as r:
        body = await r.json()
        assert r.status != 200 or body == {"ok": True, "n": 2}
        return r.status


async def test_killed_worker_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MODGATE_EXECUTOR_LISTEN": f"127.0.0.1:{port}",
        "MODGATE_EXECUTOR_WORKERS": "2",
    }
    proc = await asyncio.create_subprocess_exec(
        MODGATE,
        "executor",
        env=env,
        cwd=str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    async def serving() -> bool:
        return len(_children(proc.pid)) == 2 and await _call(url) == 200

    try:
        await eventually(
            serving,
            timeout=30,
            interval=0.05,
            ignore=(aiohttp.ClientError,),  # refused while the workers start
            what="two workers, answering 200",
        )
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        await eventually(  # replaced (the supervisor backs off about half a second)
            lambda: _children(proc.pid),
            until=lambda current: len(current) == 2 and workers[0] not in current,
            interval=0.05,
            what=f"worker {workers[0]} replaced",
        )
        statuses = [await _call(url) for _ in range(20)]
        assert statuses == [200] * 20
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_syntax_error_is_refused_at_registration(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    route = {
        "path": "/x",
        "method": "GET",
        "handler_type": "function",
        "handler_code": "return {{;",
    }
    manifest.write_text(
        yaml.safe_dump({"modules": [{"id": CALL["module_id"], "name": "crm", "routes": [route]}]})
    )
    code, out = await run_cli("routes", "check", "-f", str(manifest), cwd=str(tmp_path))
    assert code == 2
    assert "GET /x: handler_code does not compile" in out
