"""What observability costs a request: metrics, the access log and the request log.

    .venv/bin/python bench/observability_bench.py [--seconds 4]

1. The observe step alone (µs per request): metrics only; + access log (to /dev/null); +
   request log row queued.
2. Whole requests through `modgate serve` in the Postgres mode (one worker pinned to CPU 0, wrk
   on CPU 1), static route: access and request logs off (metrics only), access log on, request
   log on (rows really written to module_api_logs), both on.

Needs wrk, Postgres (TEST_DATABASE_URL, a throwaway database is created and dropped).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ratelimit_bench import wrk
from proxy.auth.principal import Principal
from proxy.auth.scopes import Grants
from proxy.observability.access_log import AccessLog
from proxy.observability.observer import RequestObserver
from proxy.observability.request_log import RequestLog
from proxy.request_context import RequestContext
from proxy.routing.manifest import parse_manifest
from proxy.routing.model import ModuleSpec, RouteSpec
from proxy.routing.table import compile_module
from proxy.store.migrate import migrate
from proxy.store.routes import apply_manifest
from tests.support.process import ServeProcess

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MODULE = str(uuid.uuid4())


class _Request:
    """The few attributes observe() reads from an aiohttp request."""

    method = "GET"
    path = "/api/modules/b/c/7"
    remote = "127.0.0.1"
    headers: ClassVar[dict[str, str]] = {"User-Agent": "bench"}


class _Response:
    status = 200


async def observe_cost(n: int = 50_000) -> list[tuple[str, float]]:
    table = compile_module(
        ModuleSpec(id=MODULE, name="b", routes=(RouteSpec(path="/c/:id", method="GET"),))
    )
    ctx = RequestContext("rid", started=0.0)
    ctx.table, ctx.route = table, table.match("/c/7", "GET").payload
    ctx.principal, ctx.module_path = Principal("none", Grants(["read:*"])), "/c/7"

    async def discard(batch: Any) -> None:
        return None

    with open(os.devnull, "wb") as devnull:
        cases = [
            ("metrics only", RequestObserver()),
            ("metrics + access log", RequestObserver(access_log=AccessLog(devnull))),
            (
                "metrics + request log",
                RequestObserver(
                    request_log=RequestLog(
                        discard, queue_size=10**7, flush_seconds=60, batch_rows=10**7
                    )
                ),
            ),
        ]
        rows = []
        for name, observer in cases:
            started = ctx.started = time.perf_counter()
            for _ in range(n):
                observer.observe(_Request(), _Response(), ctx, None)  # type: ignore[arg-type]
            rows.append((name, (time.perf_counter() - started) / n * 1e6))
    return rows


async def end_to_end(seconds: int, rounds: int) -> list[tuple[str, float, str]]:
    name = f"modgate_obs_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{PG_URL.rpartition('/')[0]}/{name}"
    rows = []
    try:
        await migrate(dsn)
        route = {
            "path": "/r",
            "method": "GET",
            "handler_type": "static",
            "handler_code": '"ok"',
            "requires_auth": False,
        }
        conn = await asyncpg.connect(dsn)
        await apply_manifest(
            conn, parse_manifest({"modules": [{"id": MODULE, "name": "b", "routes": [route]}]})
        )
        with tempfile.TemporaryDirectory() as cwd:
            Path(cwd, "gw.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))
            for label, access, request_log in (
                ("metrics only", "false", "false"),
                ("+ access log", "true", "false"),
                ("+ request log", "false", "true"),
                ("+ both", "true", "true"),
            ):
                env = {
                    "MODGATE_DATABASE_URL": dsn,
                    "MODGATE_ACCESS_LOG": access,
                    "MODGATE_REQUEST_LOG_ENABLED": request_log,
                }
                proc = ServeProcess("--config", "gw.yaml", env=env, cwd=cwd)
                await proc.start()
                try:
                    assert proc.proc is not None
                    if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
                        subprocess.run(
                            ["taskset", "-pc", "0", str(proc.proc.pid)],
                            capture_output=True,
                            check=True,
                        )
                    url = f"{proc.url}/api/modules/b/r"
                    await asyncio.to_thread(wrk, url, 1)
                    runs = [await asyncio.to_thread(wrk, url, seconds) for _ in range(rounds)]
                    rps, latency = max(runs)
                    rows.append((label, rps, latency))
                finally:
                    await proc.stop()
        written = await conn.fetchval("SELECT count(*) FROM module_api_logs")
        rows.append((f"(rows written to module_api_logs: {written})", 0.0, ""))
        await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return rows


async def main(seconds: int, rounds: int) -> None:
    print("observe step alone (µs per request, 50,000 requests)")
    for label, micros in await observe_cost():
        print(f"  {label:24s} {micros:6.2f} µs")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the end-to-end part: apt-get install wrk")
    print(f"\nwhole requests, Postgres mode, static route, wrk -t1 -c32 -d{seconds}s,", end="")
    print(f" best of {rounds}")
    rows = await end_to_end(seconds, rounds)
    base = rows[0][1]
    for label, rps, latency in rows:
        if not rps:
            print(f"  {label}")
            continue
        extra = (1 / rps - 1 / base) * 1e6
        print(f"  {label:16s} {rps:8.0f} req/s  avg {latency:>7s}  ({extra:+5.1f} µs/request)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rounds))
