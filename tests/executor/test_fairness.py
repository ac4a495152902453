"""One module's runaway handlers cannot starve the pool: a real `modgate executor` process.

Every wait here is on an observable state (the executor's own /metrics gauges, its log, its
CPU time), never on a fixed sleep, and no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.executor.cpus import usable_cpus
from tests.executor.test_executor_process import MODGATE, _children
from tests.support.polling import eventually
from tests.support.process import free_port

A, B = "0a0a0a0a-0000-4000-8000-00000000000a", "0b0b0b0b-0000-4000-8000-00000000000b"
LOOP = "while (true) {}"
WAIT_LIMIT = 30.0  # seconds any poll may take before the test fails


class Executor:
    """`modgate executor` with one worker (so its pid is the worker's), its output collected."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MODGATE_")}
        self.env["MODGATE_EXECUTOR_LISTEN"] = self.url.removeprefix("http://")
        self.env["MODGATE_EXECUTOR_WORKERS"] = "1"
        self.env["MODGATE_SHUTDOWN_GRACE_SECONDS"] = "1"
        self.env.update({f"MODGATE_{k.upper()}": str(v) for k, v in settings.items()})
        self.cwd = tmp_path
        self.proc: asyncio.subprocess.Process | None = None
        self.output = bytearray()
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            MODGATE, "executor", env=self.env, cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._drain = asyncio.create_task(self._collect())
        await until(self._ready, "the executor is ready")

    async def _collect(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self.output += chunk

    async def _ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.returncode is None, self.output.decode(errors="replace")
        try:
            async with self.session.get(f"{self.url}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    async def call(self, module: str, code: str, site: str | None = None) -> tuple[int, Any, str]:
        """(status, JSON body, the request id sent) of one call."""
        payload = {"module_id": module, "site_id": site, "handler_key": code, "code": code}
        request_id = f"req-{time.monotonic_ns()}"
        async with self.session.post(
            f"{self.url}/v1/execute", json=payload, headers={"X-Request-ID": request_id}
        ) as r:
            return r.status, await r.json(), request_id

    async def gauge(self, name: str) -> float:
        async with self.session.get(f"{self.url}/metrics") as r:
            text = await r.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(f"{name} ") or line.startswith(f"{name}{{")
        )

    async def calls(self) -> tuple[float, float]:
        """(running, waiting) calls, as the executor reports them."""
        return (
            await self.gauge("modgate_executor_calls_in_progress"),
            await self.gauge("modgate_executor_calls_waiting"),
        )

    def cpu_ticks(self) -> int:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)

    async def idle(self) -> bool:
        """Less than a tenth of a CPU used over the next 0.3 s (a looping thread uses one)."""
        before = self.cpu_ticks()
        await asyncio.sleep(0.3)
        return self.cpu_ticks() - before < 0.03 * os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        """SIGTERM, then close the client: calls still running are cancelled by the executor's
        shutdown (a call whose client left first would run on to its deadline)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.session.close()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await eventually(check, timeout=WAIT_LIMIT, interval=0.02, what=what)


@pytest.fixture
async def start_executor(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Executor]]]:
    started: list[Executor] = []

    async def start(**settings: object) -> Executor:
        executor = Executor(tmp_path, **settings)
        started.append(executor)
        await executor.start()
        return executor

    yield start
    for executor in started:
        await executor.stop()


async def test_runaway_module_at_its_cap_does_not_block_another_module(
    start_executor: Callable[..., Awaitable[Executor]],
) -> None:
    # A long deadline: A's calls are still looping when B is answered, however slow the machine.
    pool = await start_executor(
        executor_timeout_seconds=60, executor_concurrency=8, executor_module_concurrency=2
    )
    runaway = [asyncio.create_task(pool.call(A, LOOP, f"site-{i}")) for i in range(3)]

    async def at_cap() -> bool:
        return await pool.calls() == (2, 1)  # two looping, the third waits for A's slot

    await until(at_cap, "A runs 2 calls and its third waits")
    assert (await pool.call(B, "return 'b';"))[:2] == (200, "b")
    assert (await pool.call(B, "return 'b';", "site-0"))[:2] == (200, "b")
    assert not any(task.done() for task in runaway)  # B was served while A loops
    assert await pool.calls() == (2, 1)  # A got none of the worker's 6 other slots
    await pool.stop()
    await asyncio.gather(*runaway, return_exceptions=True)


async def test_past_the_cap_and_the_queue_503_then_504_at_the_deadline(
    start_executor: Callable[..., Awaitable[Executor]],
) -> None:
    pool = await start_executor(
        executor_timeout_seconds=1, executor_module_concurrency=1, executor_queue_size=0
    )
    first = asyncio.create_task(pool.call(A, LOOP, "site-1"))

    async def running() -> bool:
        return (await pool.calls())[0] == 1

    await until(running, "A's first call runs")
    status, body, request_id = await pool.call(A, LOOP, "site-2")
    assert (status, body) == (
        503,
        {"error": "This module's handlers are all busy", "code": "module_busy",
         "request_id": request_id},
    )  # fmt: skip
    assert (await pool.call(B, "return 'b';"))[:2] == (200, "b")

    status, body, request_id = await first
    assert (status, body) == (
        504,
        {"error": "The handler took too long", "code": "handler_timeout", "request_id": request_id},
    )
    await until(pool.idle, "the looping handler is stopped (the worker's CPU goes idle)")
    # The same module and site are served again at once, by a fresh isolate.
    assert (await pool.call(A, "return 'again';", "site-1"))[:2] == (200, "again")


async def test_code_left_running_after_its_call_is_stopped(
    start_executor: Callable[..., Awaitable[Executor]],
) -> None:
    pool = await start_executor(executor_timeout_seconds=5)
    orphan = "setTimeout(() => { while (true) {} }, 5); return 'returned';"
    assert (await pool.call(A, orphan, "site-1"))[:2] == (200, "returned")

    async def logged() -> bool:
        return b"ran on after its calls ended: closed" in pool.output

    await until(logged, "the watchdog closes the isolate left looping")
    await until(pool.idle, "the worker's CPU goes idle")
    assert f"an isolate of module {A} ran on".encode() in pool.output
    assert (await pool.call(A, "return 'again';", "site-1"))[:2] == (200, "again")


async def test_default_worker_count_follows_the_cpus(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODGATE_")}
    env["MODGATE_EXECUTOR_LISTEN"] = f"127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        MODGATE, "executor", env=env, cwd=str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        cpus = usable_cpus()
        # One usable CPU: no supervisor, the process is the worker and has no children.
        expected = cpus if cpus > 1 else 0

        async def all_started() -> bool:
            return len(_children(proc.pid)) == expected and await _ready(port)

        await until(all_started, f"{expected} worker processes, ready")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def _ready(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
                return r.status == 200
    except aiohttp.ClientError:
        return False
