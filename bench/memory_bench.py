"""Resident memory of a worker's state: 100k routes compiled and 100k API keys cached.

.venv/bin/python bench/memory_bench.py [POSTGRES_URL]

Strategy: the state is built the way a Postgres-mode worker builds it, through the store's own
loaders (`load_modules`, `fetch_active_keys`) reading a real Postgres, so every value is a
separate string object as asyncpg decodes it and the JSON schemas are parsed as the store
parses them. (Routes and keys built from Python literals share their strings and understate
the cost.) The data lives in a throwaway database, created, filled with SQL and dropped: 100
modules of 1000 routes, with docs and schemas, and 100k keys spread over 100 modules, 100
sites and 10 agencies. URL: the argument, else BENCH_DATABASE_URL, else the local default.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from proxy.auth.key_directory import KeyDirectory
from proxy.routing.registry import RouteRegistry
from proxy.store.keys import fetch_active_keys
from proxy.store.migrate import migrate
from proxy.store.routes import load_modules

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MODULES, ROUTES_PER_MODULE, KEYS = 100, 1000, 100_000
KEY_BATCH = 1000  # hashes per fetch_active_keys call, as a full reload refreshes the cache

# Ids derived from a number, so routes and keys point at the same 100 modules.
_ID = "md5({kind} || {n})::uuid"
_FILL = f"""
INSERT INTO modgate_modules (id, name, upstream)
SELECT {_ID.format(kind="'module'", n="m")}, 'm' || m, 'http://127.0.0.1:8000'
FROM generate_series(0, {MODULES - 1}) AS m;

INSERT INTO module_api_routes (
  module_id, path, method, handler_type, required_scopes, summary, description,
  request_schema, response_schema)
SELECT {_ID.format(kind="'module'", n="m")},
       '/r' || r || '/:id/sub' || r % 7,
       (ARRAY['GET', 'POST', 'PUT', 'DELETE'])[r % 4 + 1],
       'proxy',
       ARRAY['m' || m || (CASE WHEN r % 4 = 0 THEN ':read' ELSE ':write' END)],
       'Record ' || r || ' of module ' || m,
       'Reads or changes one record of this kind; the id is the record''s UUID.',
       CASE WHEN r % 4 = 0 THEN NULL ELSE
         '{{"type": "object", "required": ["name"],
           "properties": {{"name": {{"type": "string"}}, "notes": {{"type": "string"}}}}}}'::jsonb
       END,
       '{{"type": "object",
         "properties": {{"id": {{"type": "string", "format": "uuid"}},
                         "name": {{"type": "string"}}}}}}'::jsonb
FROM generate_series(0, {MODULES - 1}) AS m, generate_series(0, {ROUTES_PER_MODULE - 1}) AS r;

INSERT INTO module_api_keys (
  module_id, site_id, agency_id, key_prefix, key_hash, name, scopes, allowed_ips)
SELECT {_ID.format(kind="'module'", n="k % 100")},
       {_ID.format(kind="'site'", n="(k / 7) % 100")},
       {_ID.format(kind="'agency'", n="k % 10")},
       'dmc_live_' || substr(md5(k::text), 1, 3),
       encode(sha256(convert_to('key' || k, 'UTF8')), 'hex'),
       'key ' || k, ARRAY['read:*'], ARRAY['10.0.0.0/8']
FROM generate_series(0, {KEYS - 1}) AS k;
"""


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _key_hash(k: int) -> str:
    """The hash _FILL stores for key number k."""
    return hashlib.sha256(f"key{k}".encode()).hexdigest()


async def measure(url: str) -> None:
    import aiohttp  # noqa: F401  (the gateway's own imports are part of a worker's baseline)

    conn = await asyncpg.connect(url)
    try:
        gc.collect()
        base = rss_mib()
        registry = RouteRegistry()
        registry.replace_all(await load_modules(conn), source="bench")
        gc.collect()
        routes = rss_mib()
        keys = KeyDirectory(capacity=200_000, negative_ttl=60, lookup_budget_per_second=50)
        keys.set_index([])
        for start in range(0, KEYS, KEY_BATCH):
            batch = [_key_hash(k) for k in range(start, start + KEY_BATCH)]
            found = await fetch_active_keys(conn, batch)
            for key_hash, record in found.items():
                keys.put(key_hash, record)
        del batch, found
        gc.collect()
        total = rss_mib()
    finally:
        await conn.close()
    print(
        f"worker baseline {base:.0f} MiB; +100k routes (100 modules) {routes - base:.0f} MiB; "
        f"+100k cached keys {total - routes:.0f} MiB; total {total:.0f} MiB "
        f"(target <= 200 MiB: {'met' if total <= 200 else 'NOT met'})"
    )


async def main(url: str) -> None:
    name = f"modgate_bench_{uuid.uuid4().hex[:12]}"
    base, _, _ = url.rpartition("/")
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            await migrate(f"{base}/{name}")
            filler = await asyncpg.connect(f"{base}/{name}")
            try:
                await filler.execute(_FILL)
            finally:
                await filler.close()
            await measure(f"{base}/{name}")
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
        )
    )
