"""What a call through the handler pool costs: a `return 1` function route vs a static route.

    .venv/bin/python bench/pool_bench.py [--requests 1000] [--seconds 3] [--connections 8]

Starts a real `modgate executor` (one worker, an executor token) and a `modgate serve` in the
embedded mode (a routes file, no Postgres or Redis: neither route uses ctx.db) pointed at it,
both on loopback. Then:
1. latency of REQUESTS sequential requests to each route, the two interleaved so drift hits
   both alike: p50 and p99, and their difference, the pool's per-call overhead (the gateway's
   POST to the executor, the executor's HTTP handling, the isolate call);
2. requests/s of each route under modest concurrency (wrk at CONNECTIONS connections).

Exit status 1 when something is broken (a process does not start, a non-200 answer); the
figures themselves are not checked. Needs wrk (bench/run.py installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import BenchBroken, start_serve, wrk
from tests.support.process import MODGATE, ServeProcess, free_port

MODULE_ID = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"
ROUTES = {
    "static": {"handler_type": "static", "handler_code": "1"},
    "function": {"handler_type": "function", "handler_code": "return 1;"},
}


def write_config(cwd: str) -> None:
    routes = [
        {"path": f"/{name}", "method": "GET", "requires_auth": False, **route}
        for name, route in ROUTES.items()
    ]
    manifest = {"modules": [{"id": MODULE_ID, "name": "bench", "routes": routes}]}
    Path(cwd, "routes.yaml").write_text(yaml.safe_dump(manifest))
    Path(cwd, "gw.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))


async def start_executor(
    stack: contextlib.AsyncExitStack, cwd: str, env: dict[str, str]
) -> asyncio.subprocess.Process:
    """`modgate executor`, ready (its /readyz answers), stopped when `stack` closes."""
    log = stack.enter_context(open(Path(cwd, "executor.log"), "wb"))
    proc = await asyncio.create_subprocess_exec(
        MODGATE, "executor", "--config", "gw.yaml", env=env, cwd=cwd, stdout=log, stderr=log
    )

    async def stop() -> None:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    stack.push_async_callback(stop)
    url = f"http://{env['MODGATE_EXECUTOR_LISTEN']}/readyz"
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise BenchBroken(f"modgate executor exited at start:\n{log_text(cwd)}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as r:
                    if r.status == 200:
                        return proc
            await asyncio.sleep(0.05)
    raise BenchBroken(f"modgate executor is not ready after 20 s:\n{log_text(cwd)}")


def log_text(cwd: str) -> str:
    return Path(cwd, "executor.log").read_text(errors="replace")[-4000:]


async def latencies(
    session: aiohttp.ClientSession, urls: dict[str, str], requests: int
) -> dict[str, list[float]]:
    """Milliseconds per request for each url, sorted; the urls take turns."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    for i in range(requests + 20):  # the first 20 of each warm up (isolate, connections)
        for name, url in urls.items():
            started = time.perf_counter()
            async with session.get(url) as r:
                body = await r.read()
            elapsed = (time.perf_counter() - started) * 1000
            if r.status != 200 or body.strip() != b"1":
                raise BenchBroken(f"{url}: {r.status} {body[:200]!r}")
            if i >= 20:
                samples[name].append(elapsed)
    return {name: sorted(values) for name, values in samples.items()}


def p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))]


async def run(args: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        cwd = stack.enter_context(tempfile.TemporaryDirectory())
        write_config(cwd)
        token = secrets.token_hex(16)
        listen = f"127.0.0.1:{free_port()}"
        # No MODGATE_* from the caller's environment: nothing selects Postgres or Redis here.
        base = {k: v for k, v in os.environ.items() if not k.startswith("MODGATE_")}
        await start_executor(
            stack,
            cwd,
            {
                **base,
                "MODGATE_EXECUTOR_LISTEN": listen,
                "MODGATE_EXECUTOR_WORKERS": str(args.executor_workers),
                "MODGATE_EXECUTOR_TOKEN": token,
            },
        )
        settings = {
            "MODGATE_EXECUTOR_URL": f"http://{listen}",
            "MODGATE_EXECUTOR_TOKEN": token,
            "MODGATE_ACCESS_LOG": "false",
            "MODGATE_RATE_LIMIT_ENABLED": "false",
        }
        gateway = ServeProcess("--config", "gw.yaml", "--routes-file", "routes.yaml", cwd=cwd)
        gateway.env = {**base, **settings}
        await start_serve(stack, gateway, "modgate serve")
        urls = {name: f"{gateway.url}/api/modules/bench/{name}" for name in ROUTES}
        async with aiohttp.ClientSession() as session:
            ms = await latencies(session, urls, args.requests)
        rps = {
            name: (await wrk(url, args.seconds, args.connections, []))["rps"]
            for name, url in urls.items()
        }
    static, function = ms["static"], ms["function"]
    print(
        f"handler pool per-call overhead through the gateway ({args.requests} sequential "
        f"requests per route, interleaved; executor workers: {args.executor_workers}, "
        f"{os.cpu_count()} CPUs)"
    )
    print(f"  {'route':26s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>9s}")
    for name, label in (("static", "static"), ("function", "function `return 1`")):
        values = ms[name]
        print(f"  {label:26s} {statistics.median(values):8.2f} {p99(values):8.2f} {rps[name]:9.0f}")
    print(
        f"  {'pool overhead (difference)':26s} "
        f"{statistics.median(function) - statistics.median(static):8.2f} "
        f"{p99(function) - p99(static):8.2f}"
    )
    print(f"  (req/s: wrk -t1 -c{args.connections} -d{args.seconds}s, one run each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="sequential, per route")
    parser.add_argument("--seconds", type=int, default=3, help="each wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--executor-workers", type=int, default=1)
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except BenchBroken as exc:
        sys.exit(f"pool bench: broken: {exc}")


if __name__ == "__main__":
    main()
