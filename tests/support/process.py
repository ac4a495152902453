"""Run `modgate` as a user would: a real subprocess, driven over real sockets and signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.support.polling import eventually

MODGATE = str(Path(sys.executable).with_name("modgate"))


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, never the same twice in this test run (the kernel may hand
    a just-released port out again, and two gateways on one port confuse every assertion)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


class ServeProcess:
    """`modgate serve` on free ports, with helpers to wait for readiness and stop it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: str | None = None):
        self.port = free_port()
        self.admin_port = free_port()
        self.args = [
            MODGATE,
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin-listen",
            f"127.0.0.1:{self.admin_port}",
            *args,
        ]
        # Rate limits are off unless a test turns them on: polling tests would hit them.
        self.env = {**os.environ, "MODGATE_RATE_LIMIT_ENABLED": "false", **(env or {})}
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self._output = bytearray()
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def start(self, *, wait_ready: bool = True, timeout: float = 20) -> ServeProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        # Read as it comes: a pipe nobody reads fills up and stalls the gateway's writes.
        self._drain = asyncio.create_task(self._collect())
        if wait_ready:
            await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float = 20) -> None:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise AssertionError(f"modgate exited early:\n{await self.output()}")
                async with session.get(f"{self.admin_url}/readyz") as r:
                    return r.status == 200

            await eventually(
                ready,
                timeout=timeout,
                interval=0.05,
                what="modgate's /readyz answers 200",
                ignore=(aiohttp.ClientError,),  # not listening yet
            )

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def _collect(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self._output += chunk

    def output_so_far(self) -> str:
        return self._output.decode(errors="replace")

    async def output(self) -> str:
        """Everything the process wrote, once it has exited ("" while it runs)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            return ""
        if self._drain is not None:
            await self._drain
        return self._output.decode(errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def vm_hwm_kib(pid: int) -> int:
    """Peak resident memory of a process (Linux), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        MODGATE,
        *args,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()
