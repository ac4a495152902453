"""What the seed's CRM list costs through the gateway: a handler call with one ctx.db query.

    .venv/bin/python bench/crm_bench.py [--requests 300]

Creates a throwaway database (TEST_DATABASE_URL) with the seed's CRM table, its five routes
(handler code verbatim, tests/executor/seed_crm.py), a static and a `return 1` route, and a
key; starts a real `modgate executor` (one worker) and a `modgate serve` (one worker, Postgres
mode) pointed at it. Then REQUESTS sequential requests to each of the three GET routes,
interleaved so drift hits all alike: p50 and p99 in ms. `return 1` minus static is the handler
pool's per-call overhead (bench/pool_bench.py measures that alone, with throughput); the CRM
list (an empty table, so the figure is the query's round trip, not its rows) adds the ctx.db
round trip from the isolate to Postgres and back.

Exit status 1 when something is broken (a process does not start, a non-200 answer); the
figures themselves are not checked. Needs Postgres.
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
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pool_bench import p99, start_executor
from bench.run import BenchBroken, create_database, start_serve
from proxy.routing.manifest import parse_manifest
from proxy.store.keys import create_key
from proxy.store.migrate import migrate
from proxy.store.routes import apply_manifest
from tests.executor.seed_crm import CREATE, DELETE, GET, LIST, UPDATE
from tests.support.process import ServeProcess, free_port

CRM = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"
SITE = str(uuid.uuid4())
WARMUP = 20  # requests per route not counted: isolate, compiled handler, connections
SEED_ROUTES = [
    ("/contacts", "GET", LIST, ["read:contacts"]),
    ("/contacts/:id", "GET", GET, ["read:contacts"]),
    ("/contacts", "POST", CREATE, ["write:contacts"]),
    ("/contacts/:id", "PUT", UPDATE, ["write:contacts"]),
    ("/contacts/:id", "DELETE", DELETE, ["delete:contacts"]),
]


async def seed(dsn: str) -> str:
    """The schema, the CRM table and routes, a static and a `return 1` route; returns a key."""
    await migrate(dsn)
    routes = [
        {"path": p, "method": m, "handler_type": "function", "handler_code": code,
         "required_scopes": scopes}
        for p, m, code, scopes in SEED_ROUTES
    ] + [
        {"path": "/static", "method": "GET", "handler_type": "static", "handler_code": "1",
         "requires_auth": False},
        {"path": "/noop", "method": "GET", "handler_type": "function", "handler_code": "return 1;",
         "requires_auth": False},
    ]  # fmt: skip
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE mod_6f1c2a9e_contacts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
            " site_id uuid NOT NULL, name text NOT NULL, email text,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        await apply_manifest(
            conn, parse_manifest({"modules": [{"id": CRM, "name": "crm", "routes": routes}]})
        )
        _, key = await create_key(
            conn,
            module_id=CRM,
            site_id=SITE,
            agency_id=str(uuid.uuid4()),
            name="crm bench",
            scopes=["read:contacts"],
        )
    finally:
        await conn.close()
    return key


async def latencies(
    session: aiohttp.ClientSession, urls: dict[str, tuple[str, dict[str, str]]], requests: int
) -> dict[str, list[float]]:
    """Milliseconds per request for each (url, headers), sorted; the urls take turns."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    for i in range(requests + WARMUP):
        for name, (url, headers) in urls.items():
            started = time.perf_counter()
            async with session.get(url, headers=headers) as r:
                body = await r.read()
            elapsed = (time.perf_counter() - started) * 1000
            if r.status != 200:
                raise BenchBroken(f"{url}: {r.status} {body[:200]!r}")
            if i >= WARMUP:
                samples[name].append(elapsed)
    return {name: sorted(values) for name, values in samples.items()}


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    async with contextlib.AsyncExitStack() as stack:
        cwd = stack.enter_context(tempfile.TemporaryDirectory())
        Path(cwd, "gw.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))
        dsn = await create_database(stack)
        key = await seed(dsn)
        token = secrets.token_hex(16)
        listen = f"127.0.0.1:{free_port()}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("MODGATE_")}
        await start_executor(
            stack,
            cwd,
            {
                **base,
                "MODGATE_EXECUTOR_LISTEN": listen,
                "MODGATE_EXECUTOR_WORKERS": "1",
                "MODGATE_EXECUTOR_TOKEN": token,
                "MODGATE_DATABASE_URL": dsn,
            },
        )
        gateway = ServeProcess("--config", "gw.yaml", "--workers", "1", cwd=cwd)
        gateway.env = {
            **base,
            "MODGATE_DATABASE_URL": dsn,
            "MODGATE_EXECUTOR_URL": f"http://{listen}",
            "MODGATE_EXECUTOR_TOKEN": token,
            "MODGATE_ACCESS_LOG": "false",
            "MODGATE_RATE_LIMIT_ENABLED": "false",
        }
        await start_serve(stack, gateway, "modgate serve")
        api = f"{gateway.url}/api/modules/crm"
        urls = {
            "static route": (f"{api}/static", {}),
            "handler `return 1`": (f"{api}/noop", {}),
            "CRM list (one ctx.db query)": (f"{api}/contacts", {"X-API-Key": key}),
        }
        async with aiohttp.ClientSession() as session:
            return await latencies(session, urls, args.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="sequential, per route")
    args = parser.parse_args()
    try:
        ms = asyncio.run(run(args))
    except BenchBroken as exc:
        sys.exit(f"crm bench: broken: {exc}")
    print(
        f"the seed's CRM handlers through the gateway ({args.requests} sequential requests per "
        f"route, interleaved; one gateway and one executor worker, {os.cpu_count()} CPUs)"
    )
    print(f"  {'route':30s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, values in ms.items():
        print(f"  {name:30s} {statistics.median(values):8.2f} {p99(values):8.2f}")
    static, noop = ms["static route"], ms["handler `return 1`"]
    print(
        f"  {'pool overhead (difference)':30s} "
        f"{statistics.median(noop) - statistics.median(static):8.2f} {p99(noop) - p99(static):8.2f}"
    )


if __name__ == "__main__":
    main()
