"""Entity REST CRUD (issue 16) through the full gateway, on a table of a million rows.

    .venv/bin/python bench/entities_bench.py [--rows 1000000] [--requests 500]
        [--depth 400] [--seconds 5] [--rounds 3] [--connections 8] [--executor-workers 1]
        [--database-pool-size N] [--explain]

Creates a throwaway database (TEST_DATABASE_URL; a random name, dropped on the way out, on
failure and on SIGTERM too) and in it the module table of docs/rest-api.md,
`mod_6f1c2a9e_products`, filled by one `INSERT ... SELECT generate_series` with ROWS rows
spread over 100 sites (10,000 each by default; a site's rows interleaved with the others', as
rows written over time are), then the indexes docs/rest-api.md recommends (listed in the
output, with their build times), VACUUM ANALYZE. `modgate routes apply -f` of a manifest with
the `products` entity (all five operations) and a `return 1` function route, a key for one
site (all three scopes, rate limit 10^9/min); a real `modgate executor` (EXECUTOR_WORKERS
workers) and a real `modgate serve` (one worker, Postgres mode: the key from Postgres, the
Redis limiter, the request log, metrics; as bench/run.py).

Then, through the gateway:
1. latency at low load: REQUESTS sequential requests of each kind, interleaved so drift hits
   all alike (after 20 of each not counted): list page 1 (default order, created_at desc, 20
   rows); a keyset page DEPTH pages deep (the cursor found by following `next_cursor` from
   page 1, default order); read by id (ids of that site, random); create; and, not targets,
   the same depth by `page=` (OFFSET), a cursor page as deep with `sort=price&order=asc` (the
   ascending keyset: two index ranges merged, docs/rest-api.md) and the `return 1` route.
   p50/p95/p99 in ms each.
2. throughput: read by id (wrk cycling through 1000 ids of the site) against the `return 1`
   function route, wrk -t1 -cCONNECTIONS -dSECONDS, alternating rounds, the best of each
   (a concurrent aiohttp loop when wrk is not installed).

Targets (issue 16), printed PASS/FAIL: each of list page 1, the deep cursor page, read by id and
create p95 <= 20 ms; read-by-id throughput >= half of the function route's. `--explain` prints
EXPLAIN (ANALYZE, BUFFERS) of the statements the pool sends (built by
proxy/executor/entities/sql.py) for list page 1, the two deep cursor pages and a read by id.
The throughput part also prints the CPU time per request of the gateway, the pool and the
bench database's Postgres backends (/proc utime + stime over each run): on a shared machine a
steadier measure than req/s.

Exit status 1 when something is broken (a process does not start, an unexpected status); a
missed target is printed, never a failure. Needs Postgres (TEST_DATABASE_URL) and Redis
(TEST_REDIS_URL); wrk for the throughput part (bench/run.py installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pool_bench import start_executor
from bench.run import (
    _SOCKET_ERRORS,
    REDIS_URL,
    BenchBroken,
    create_database,
    pinned,
    start_serve,
)
from proxy.executor.entities.query import parse_list_query
from proxy.executor.entities.schema import schema_from_config
from proxy.executor.entities.sql import list_statement, read_statement
from proxy.routing.entities_manifest import parse_entity
from proxy.store.keys import create_key
from proxy.store.migrate import migrate
from tests.support.gateway import MODULE_ID
from tests.support.process import MODGATE, ServeProcess, free_port
from tests.support.shop import CREATE_PRODUCTS, PRODUCTS_TABLE, products, shop_manifest

TABLE = PRODUCTS_TABLE
SITES = 100
WARMUP = 20  # requests of each kind not counted: connections, the isolate, caches
LIMIT = 20  # the default page size
TARGET_P95_MS = 20.0
TARGET_THROUGHPUT_RATIO = 0.5
WRK_IDS = 1000

ENTITY = products()
NOOP_ROUTE = {
    "path": "/noop",
    "method": "GET",
    "handler_type": "function",
    "handler_code": "return 1;",
    "required_scopes": ["read:products"],  # the same key, authentication and limiter
}

CREATE_TABLE = "CREATE EXTENSION IF NOT EXISTS pg_trgm;" + CREATE_PRODUCTS
# Row g: site g % 100 (so a site's rows are spread over the whole heap), created g seconds
# before the start (distinct timestamps, newest first = smallest g), a price cycling 0..999.99.
FILL = f"""
INSERT INTO {TABLE} (site_id, name, sku, price, cost, status, created_at, updated_at)
SELECT ($2::uuid[])[g % {SITES} + 1], 'Item ' || g, 'SKU-' || g, (g % 100000) / 100.0, 1.50,
       'live', ts, ts
FROM generate_series(0, $1::int - 1) AS g,
     LATERAL (SELECT now() - g * interval '1 second' AS ts) AS t"""
# docs/rest-api.md, "Indexes": the default order, one per sortable field, trigrams for search.
INDEXES = [
    ("(site_id, created_at DESC, id DESC)", "the default list order and its cursor pages"),
    ("(site_id, price, id)", "sort=price, both directions"),
    ("(site_id, name, id)", "sort=name, both directions"),
    ("USING gin (name gin_trgm_ops, sku gin_trgm_ops)", "search= (pg_trgm)"),
]

TARGETS = ("list page 1", "deep cursor page", "read by id", "create")


def percentile(values: list[float], p: float) -> float:
    """Nearest rank of sorted `values`."""
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


async def build_table(dsn: str, rows: int, sites: list[str]) -> list[str]:
    """The table, its rows, the recommended indexes; returns the lines to print."""
    lines: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(CREATE_TABLE)
        started = time.perf_counter()
        await conn.execute(FILL, rows, sites)
        lines.append(
            f"  {rows:,} rows ({SITES} sites x {rows // SITES:,}), one INSERT ... SELECT "
            f"generate_series: {time.perf_counter() - started:.1f} s"
        )
        await conn.execute("SET maintenance_work_mem = '256MB'")
        lines.append("  indexes (docs/rest-api.md, Indexes), besides the primary key on id:")
        for spec, why in INDEXES:
            started = time.perf_counter()
            await conn.execute(f"CREATE INDEX ON {TABLE} {spec}")
            lines.append(
                f"    {TABLE} {spec}: {why} ({time.perf_counter() - started:.1f} s to build)"
            )
        started = time.perf_counter()
        await conn.execute(f"VACUUM ANALYZE {TABLE}")
        size = await conn.fetchval(f"SELECT pg_size_pretty(pg_total_relation_size('{TABLE}'))")
        lines.append(
            f"  VACUUM ANALYZE: {time.perf_counter() - started:.1f} s; table with indexes: {size}"
        )
    finally:
        await conn.close()
    return lines


async def apply_manifest_cli(cwd: str, dsn: str) -> str:
    """`modgate routes apply -f` of the module's manifest, as a user runs it."""
    manifest = shop_manifest(routes=[NOOP_ROUTE])
    path = Path(cwd, "shop.yaml")
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODGATE_")}
    proc = await asyncio.create_subprocess_exec(
        MODGATE, "routes", "apply", "-f", str(path),
        env={**env, "MODGATE_DATABASE_URL": dsn}, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise BenchBroken(f"modgate routes apply failed ({proc.returncode}): {text}")
    return text


async def new_key(dsn: str, site: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        _, key = await create_key(
            conn,
            module_id=MODULE_ID,
            site_id=site,
            agency_id=str(uuid.uuid4()),
            name="entities bench",
            scopes=["read:products", "write:products", "delete:products"],
            rate_limit_per_minute=10**9,
            rate_limit_per_day=None,
        )
    finally:
        await conn.close()
    return key


async def follow(
    session: aiohttp.ClientSession, url: str, query: dict[str, str], depth: int
) -> str:
    """The cursor of page depth + 1 of the list `url?query`, found by following next_cursor."""
    cursor: str | None = None
    for page in range(1, depth + 1):
        params = {**query, "cursor": cursor} if cursor else query
        async with session.get(url, params=params) as r:
            body = await r.json(content_type=None)
            if r.status != 200:
                raise BenchBroken(f"{url} page {page}: {r.status} {body}")
        cursor = body["pagination"]["next_cursor"]
        if cursor is None:
            raise BenchBroken(f"{url}: no next_cursor on page {page} (too few rows per site?)")
    assert cursor is not None
    return cursor


Request = Callable[[aiohttp.ClientSession, int], Awaitable[tuple[int, bytes]]]


def get(url: str, params: dict[str, str] | None = None) -> Request:
    async def call(session: aiohttp.ClientSession, _: int) -> tuple[int, bytes]:
        async with session.get(url, params=params) as r:
            return r.status, await r.read()

    return call


async def latencies(
    session: aiohttp.ClientSession, kinds: dict[str, tuple[Request, int]], requests: int
) -> dict[str, list[float]]:
    """Milliseconds per request of each kind, sorted; the kinds take turns."""
    samples: dict[str, list[float]] = {name: [] for name in kinds}
    for i in range(requests + WARMUP):
        for name, (call, expected) in kinds.items():
            started = time.perf_counter()
            status, body = await call(session, i)
            elapsed = (time.perf_counter() - started) * 1000
            if status != expected:
                raise BenchBroken(f"{name}: {status} (expected {expected}) {body[:300]!r}")
            if i >= WARMUP:
                samples[name].append(elapsed)
    return {name: sorted(values) for name, values in samples.items()}


async def wrk_run(
    url: str, seconds: int, connections: int, headers: dict[str, str], paths: list[str] | None
) -> float:
    """Requests/s of one wrk run (cycling through `paths` when given); BenchBroken on non-2xx
    answers or socket errors."""
    args = [*pinned("1"), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if paths:
            listed = ",\n".join(f'"{p}"' for p in paths)
            script.write(
                f"local paths = {{\n{listed}\n}}\nlocal n = 0\n"
                "request = function()\n  n = n + 1\n"
                "  return wrk.format(nil, paths[(n % #paths) + 1])\nend\n"
            )
    try:
        if paths:
            args += ["-s", script.name]
        args.append(url)
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            raw, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        os.unlink(script.name)
    out = raw.decode(errors="replace")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if proc.returncode != 0 or found is None:
        raise BenchBroken(f"wrk {url} failed (exit {proc.returncode}):\n{out}")
    errors = _SOCKET_ERRORS.search(out)
    if "Non-2xx" in out or (errors and any(int(n) for n in errors.groups())):
        raise BenchBroken(f"wrk {url}: non-2xx answers or socket errors\n{out}")
    return float(found.group(1))


async def loop_run(
    url: str, seconds: int, connections: int, headers: dict[str, str], paths: list[str] | None
) -> float:
    """Requests/s of CONNECTIONS concurrent aiohttp loops (when wrk is not installed)."""
    base = url.split("/api/", 1)[0]
    done = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(offset: int) -> None:
            nonlocal done
            n = offset
            while time.monotonic() < deadline:
                target = base + paths[n % len(paths)] if paths else url
                n += connections
                async with session.get(target) as r:
                    await r.read()
                    if r.status != 200:
                        raise BenchBroken(f"{target}: {r.status}")
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(connections)))
    return done / (time.monotonic() - started)


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (the gateway's or the pool's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (those still running)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def explain(
    dsn: str, site: str, queries: dict[str, list[tuple[str, str]]], row_id: str
) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement the pool builds for each list query and for
    a read of `row_id`."""
    schema = schema_from_config(parse_entity(ENTITY, "bench", "entity"), TABLE)
    statements = {
        name: list_statement(schema, site, parse_list_query(pairs, schema))
        for name, pairs in queries.items()
    }
    statements["read by id"] = read_statement(schema, site, row_id)
    conn = await asyncpg.connect(dsn)
    try:
        for name, statement in statements.items():
            plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement.sql}", *statement.args)
            print(f"\nEXPLAIN (ANALYZE, BUFFERS), {name}:")
            for row in plan:
                print(f"  {row[0]}")
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sites = [str(uuid.uuid4()) for _ in range(SITES)]
    site = sites[0]
    result: dict[str, Any] = {"load_before": load()}
    async with contextlib.AsyncExitStack() as stack:
        cwd = stack.enter_context(tempfile.TemporaryDirectory())
        Path(cwd, "gw.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))
        dsn = await create_database(stack)
        await migrate(dsn)
        result["setup"] = await build_table(dsn, args.rows, sites)
        result["setup"].append(f"  {await apply_manifest_cli(cwd, dsn)}")
        key = await new_key(dsn, site)
        conn = await asyncpg.connect(dsn)
        try:
            ids = [
                str(r[0])
                for r in await conn.fetch(
                    f"SELECT id FROM {TABLE} WHERE site_id = $1 ORDER BY random() LIMIT $2",
                    site,
                    max(WRK_IDS, args.requests + WARMUP),
                )
            ]
        finally:
            await conn.close()

        token = secrets.token_hex(16)
        listen = f"127.0.0.1:{free_port()}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("MODGATE_")}
        executor = await start_executor(
            stack,
            cwd,
            {
                **base,
                "MODGATE_EXECUTOR_LISTEN": listen,
                "MODGATE_EXECUTOR_WORKERS": str(args.executor_workers),
                "MODGATE_EXECUTOR_TOKEN": token,
                "MODGATE_DATABASE_URL": dsn,
                **(
                    {"MODGATE_DATABASE_POOL_SIZE": str(args.database_pool_size)}
                    if args.database_pool_size
                    else {}
                ),
            },
        )
        gateway = ServeProcess("--config", "gw.yaml", "--workers", "1", cwd=cwd)
        gateway.env = {
            **base,
            "MODGATE_DATABASE_URL": dsn,
            "MODGATE_REDIS_URL": REDIS_URL,
            "MODGATE_RATE_LIMIT_ENABLED": "true",
            "MODGATE_REDIS_TIMEOUT_SECONDS": "0.05",
            "MODGATE_ACCESS_LOG": "false",
            "MODGATE_EXECUTOR_URL": f"http://{listen}",
            "MODGATE_EXECUTOR_TOKEN": token,
        }
        await start_serve(stack, gateway, "modgate serve")
        api = f"{gateway.url}/api/modules/shop"
        products = f"{api}/products"
        headers = {"X-API-Key": key}
        async with aiohttp.ClientSession(headers=headers) as session:
            started = time.perf_counter()
            deep = await follow(session, products, {}, args.depth)
            walk_s = time.perf_counter() - started
            asc = {"sort": "price", "order": "asc"}
            started = time.perf_counter()
            deep_asc = await follow(session, products, asc, args.depth)
            walk_asc_s = time.perf_counter() - started
            result["walk"] = (
                f"  cursor of page {args.depth + 1} found by following next_cursor from page 1: "
                f"{walk_s:.1f} s default order, {walk_asc_s:.1f} s sort=price&order=asc "
                f"({args.depth} pages each)"
            )

            async def create(session: aiohttp.ClientSession, i: int) -> tuple[int, bytes]:
                body = {"name": f"Bench {i}", "sku": f"BENCH-{i}", "price": "9.99"}
                async with session.post(products, json=body) as r:
                    return r.status, await r.read()

            async def read(session: aiohttp.ClientSession, i: int) -> tuple[int, bytes]:
                async with session.get(f"{products}/{ids[i % len(ids)]}") as r:
                    return r.status, await r.read()

            page = args.depth + 1
            kinds: dict[str, tuple[Request, int]] = {
                "list page 1": (get(products), 200),
                "deep cursor page": (get(products, {"cursor": deep}), 200),
                "read by id": (read, 200),
                "create": (create, 201),
                f"page={page} (OFFSET)": (get(products, {"page": str(page)}), 200),
                "deep cursor, price asc": (get(products, {**asc, "cursor": deep_asc}), 200),
                "function `return 1`": (get(f"{api}/noop"), 200),
            }
            result["latency"] = await latencies(session, kinds, args.requests)

        paths = [f"/api/modules/shop/products/{i}" for i in ids[:WRK_IDS]]
        measure = wrk_run if shutil.which("wrk") else loop_run
        result["throughput_tool"] = (
            f"wrk -t1 -c{args.connections} -d{args.seconds}s"
            if measure is wrk_run
            else f"{args.connections} concurrent aiohttp loops, {args.seconds} s (no wrk)"
        )
        best: dict[str, float] = {}
        targets = {"read by id": (products, paths), "function `return 1`": (f"{api}/noop", None)}
        for url, cycle in targets.values():  # warm-up
            await measure(url, 1, args.connections, headers, cycle)
        # CPU per request of each process group over the run: the gateway (supervisor and
        # worker), the pool (supervisor and workers), the bench database's Postgres backends.
        conn = await asyncpg.connect(dsn)
        try:
            backends = [
                r[0]
                for r in await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            ]
        finally:
            await conn.close()
        assert gateway.proc is not None
        groups = {
            "gateway": process_tree(gateway.proc.pid),
            "pool": process_tree(executor.pid),
            "postgres": backends,
        }
        cpu: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, (url, cycle) in targets.items():
                before = {group: cpu_seconds(pids) for group, pids in groups.items()}
                rps = await measure(url, args.seconds, args.connections, headers, cycle)
                done = rps * args.seconds
                if rps > best.get(name, 0.0):
                    best[name] = rps
                    cpu[name] = {
                        group: (cpu_seconds(pids) - before[group]) / done * 1e6
                        for group, pids in groups.items()
                    }
        result["throughput"] = best
        result["cpu_us"] = cpu
        if gateway.proc is None or gateway.proc.returncode is not None:
            raise BenchBroken(f"modgate serve exited:\n{gateway.output_so_far()[-4000:]}")
        if args.explain:
            await explain(
                dsn,
                site,
                {
                    "list page 1": [],
                    f"deep cursor page ({page}, default order)": [("cursor", deep)],
                    f"deep cursor page ({page}, sort=price&order=asc)": [
                        ("sort", "price"), ("order", "asc"), ("cursor", deep_asc),
                    ],
                },
                ids[0],
            )  # fmt: skip
        result["load_after"] = load()
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nentities through the full gateway ({args.rows:,} rows, {SITES} sites; one gateway "
        f"worker, executor workers: {args.executor_workers}, Postgres connections each: "
        f"{args.database_pool_size or 'default'}; {os.cpu_count()} CPUs)"
    )
    print(f"  before: {result['load_before']}")
    for line in result["setup"]:
        print(line)
    print(result["walk"])
    print(
        f"\nlatency at low load ({args.requests} sequential requests of each kind, interleaved, "
        f"one connection; limit {LIMIT}; the site holds {args.rows // SITES:,} rows before "
        "the creates)"
    )
    print(f"  {'request':28s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}")
    for name, values in result["latency"].items():
        print(
            f"  {name:28s} {percentile(values, 50):8.2f} {percentile(values, 95):8.2f} "
            f"{percentile(values, 99):8.2f}"
        )
    tput = result["throughput"]
    ratio = tput["read by id"] / tput["function `return 1`"]
    print(f"\nthroughput ({result['throughput_tool']}, best of {args.rounds} alternating rounds)")
    print(f"  {'':37s} CPU us per request (the run's utime + stime / requests)")
    print(f"  {'route':28s} {'req/s':>8s} {'gateway':>9s} {'pool':>9s} {'postgres':>9s}")
    for name, rps in tput.items():
        us = result["cpu_us"][name]
        print(
            f"  {name:28s} {rps:8.0f} {us['gateway']:9.0f} {us['pool']:9.0f} {us['postgres']:9.0f}"
        )
    print(f"  {'read by id / function':28s} {ratio:8.2f}")
    print("\ntargets (issue 16)")
    for name in TARGETS:
        p95 = percentile(result["latency"][name], 95)
        verdict = "PASS" if p95 <= TARGET_P95_MS else "FAIL"
        print(f"  {name} p95 <= {TARGET_P95_MS:.0f} ms: {verdict} ({p95:.2f} ms)")
    verdict = "PASS" if ratio >= TARGET_THROUGHPUT_RATIO else "FAIL"
    print(
        f"  read-by-id throughput >= {TARGET_THROUGHPUT_RATIO} x the function route's: "
        f"{verdict} ({ratio:.2f})"
    )
    print(f"  after: {result['load_after']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help=f"over {SITES} sites")
    parser.add_argument("--requests", type=int, default=500, help="sequential, of each kind")
    parser.add_argument("--depth", type=int, default=400, help="pages before the deep page")
    parser.add_argument("--seconds", type=int, default=5, help="each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--executor-workers", type=int, default=1)
    parser.add_argument(
        "--database-pool-size",
        type=int,
        help="Postgres connections per executor worker (default: the setting's default, 2)",
    )
    parser.add_argument("--explain", action="store_true", help="EXPLAIN the list statements")
    args = parser.parse_args()
    per_site = args.rows // SITES
    if args.depth * LIMIT >= per_site:
        parser.error(f"--depth {args.depth} needs more than {args.depth * LIMIT} rows per site")

    async def guarded() -> dict[str, Any]:
        # SIGTERM unwinds like Ctrl-C: the processes stop and the database is dropped.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(args)

    try:
        result = asyncio.run(guarded())
    except BenchBroken as exc:
        sys.exit(f"entities bench: broken: {exc}")
    except (asyncio.CancelledError, KeyboardInterrupt):  # SIGTERM, Ctrl-C: cleaned up
        sys.exit("entities bench: interrupted")
    report(result, args)


if __name__ == "__main__":
    main()
