"""The outage probe: does a Postgres outage under load lose request-log rows or key usage?

    .venv/bin/python bench/outage_bench.py [--outage 30] [--rate 200] [--cut refuse|blackhole]

`modgate serve` (default settings, but for the database URL, rate limits off and the access log
off) reaches Postgres through the fault proxy of tests/support (the shared server is never
stopped). A paced client sends `--rate` requests/s with one API key, each to its own path,
for 5 s, then the proxy cuts Postgres for `--outage` s (refuse: as a stopped server, every
connection reset; blackhole: a silent partition), then 5 s more with Postgres back. It then
waits for the rows to land, SIGTERMs the gateway, and prints rows expected (2xx answers) vs
written, duplicates, rows out of recording order, the drop counters, how long after Postgres's
return the rows held through the outage were all written, and the key's request_count vs the
requests it made.

Needs Postgres (TEST_DATABASE_URL; a throwaway database is created and dropped).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from itertools import pairwise
from pathlib import Path

import aiohttp
import asyncpg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.routing.manifest import parse_manifest
from proxy.store.keys import create_key
from proxy.store.migrate import migrate
from proxy.store.routes import apply_manifest
from tests.support.fault_proxy import FaultProxy
from tests.support.process import ServeProcess

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MODULE = str(uuid.uuid4())
SITE = str(uuid.uuid4())
BEFORE_SECONDS = AFTER_SECONDS = 5.0
DRAIN_TIMEOUT = 60.0


class Load:
    """Requests at a fixed rate, each to /contacts/{n}; answers counted by status."""

    def __init__(self, url: str, key: str, rate: float) -> None:
        self.url, self.key, self.rate = url, key, rate
        self.sent = 0
        self.statuses: Counter[int | str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, session: aiohttp.ClientSession, seconds: float) -> None:
        start = time.monotonic()
        for i in range(int(seconds * self.rate)):
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(session, self.sent))
            self.sent += 1
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def answered(self) -> int:
        """Requests answered 200 so far: each one's row must be written."""
        return self.statuses[200]

    async def finish(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _one(self, session: aiohttp.ClientSession, n: int) -> None:
        try:
            async with session.get(
                f"{self.url}/api/modules/crm/contacts/{n}", headers={"X-API-Key": self.key}
            ) as response:
                await response.read()
                self.statuses[response.status] += 1
        except aiohttp.ClientError as exc:
            self.statuses[type(exc).__name__] += 1


async def seed(dsn: str) -> tuple[str, str]:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        route = {"path": "/contacts/:id", "method": "GET", "handler_type": "static",
                 "handler_code": "{}", "required_scopes": ["read:contacts"]}  # fmt: skip
        manifest = {"modules": [{"id": MODULE, "name": "crm", "routes": [route]}]}
        await apply_manifest(conn, parse_manifest(manifest))
        record, key = await create_key(
            conn, module_id=MODULE, site_id=SITE, agency_id=SITE, name="outage-bench",
            scopes=["read:contacts"], rate_limit_per_minute=None,
        )  # fmt: skip
    finally:
        await conn.close()
    return record.id, key


async def metric(session: aiohttp.ClientSession, url: str, prefix: str) -> dict[str, float]:
    """The samples of /metrics whose line starts with `prefix`, by their label text."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith(prefix + "{"):
            name, _, value = line.rpartition(" ")
            samples[name[len(prefix) :]] = float(value)
    return samples


async def probe(dsn: str, outage: float, rate: float, cut: str) -> None:
    key_id, key = await seed(dsn)
    host, port = "127.0.0.1", int(dsn.rsplit(":", 1)[1].split("/")[0])
    proxy = await FaultProxy(host, port).start()
    db = await asyncpg.connect(dsn)
    with tempfile.TemporaryDirectory() as cwd:
        Path(cwd, "gw.yaml").write_text(yaml.safe_dump({"log_level": "info"}))
        env = {"MODGATE_DATABASE_URL": proxy.url_for(dsn), "MODGATE_ACCESS_LOG": "false"}
        gateway = ServeProcess("--config", "gw.yaml", env=env, cwd=cwd)
        await gateway.start()
        load = Load(gateway.url, key, rate)
        try:
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=connector) as session:
                await load.run(session, BEFORE_SECONDS)
                proxy.set_mode(cut)
                cut_at = time.monotonic()
                await load.run(session, outage)
                proxy.set_mode("pass")
                back_at = time.monotonic()
                backlog = asyncio.create_task(wait_for_rows(db, load.answered))
                await load.run(session, AFTER_SECONDS)
                await load.finish()
                backlog_rows, backlog_at = await backlog
                expected = load.answered
                written, _ = await wait_for_rows(db, expected)
                drops = await metric(
                    session, gateway.admin_url, "modgate_request_log_dropped_total"
                )
                usage_drops = await metric(
                    session, gateway.admin_url, "modgate_key_usage_dropped_total"
                )
        finally:
            await gateway.stop()
            await proxy.close()
        output = gateway.output_so_far()
    try:
        dupes = await db.fetchval("SELECT count(*) - count(DISTINCT path) FROM module_api_logs")
        ordered = await db.fetch(
            "SELECT created_at FROM module_api_logs ORDER BY xmin::text::bigint, ctid"
        )
        out_of_order = sum(1 for a, b in pairwise(ordered) if b[0] < a[0])
        used = await db.fetchval(
            "SELECT request_count FROM module_api_keys WHERE id = $1::uuid", key_id
        )
    finally:
        await db.close()

    print(f"outage probe: Postgres cut ({cut}) for {outage:.0f} s at {rate:.0f} req/s, "
          f"{BEFORE_SECONDS:.0f} s of load before and {AFTER_SECONDS:.0f} s after")  # fmt: skip
    print(f"  requests sent            {load.sent}  answers {dict(load.statuses)}")
    print(f"  outage lasted            {back_at - cut_at:.1f} s")
    print(f"  rows expected            {expected}")
    print(f"  rows written             {written}  (lost {expected - written})")
    print(f"  duplicated rows          {dupes}")
    print(f"  rows out of order        {out_of_order}")
    if backlog_at is not None:
        print(f"  backlog written          {backlog_at - back_at:.1f} s after Postgres returned "
              f"({backlog_rows} rows in the table by then)")  # fmt: skip
    print(f"  request log drops        {_labels(drops)}")
    print(f"  key usage                request_count {used} for {expected} requests; "
          f"drops {_labels(usage_drops)}")  # fmt: skip
    lines = [line for line in output.splitlines() if "request_log" in line or "usage" in line]
    print("  gateway log (request log and usage lines):")
    for line in lines[:12]:
        print(f"    {line}")


async def wait_for_rows(db: asyncpg.Connection, expected: int) -> tuple[int, float | None]:
    """Rows written once they reach `expected` (or after DRAIN_TIMEOUT), and when they did."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        count = int(await db.fetchval("SELECT count(*) FROM module_api_logs"))
        if count >= expected:
            return count, time.monotonic()
        if time.monotonic() > deadline:
            return count, None
        await asyncio.sleep(0.05)


def _labels(samples: dict[str, float]) -> str:
    parts = [f"{k} {v:.0f}" for k, v in sorted(samples.items())]
    return ", ".join(parts) or "none"


async def main(outage: float, rate: float, cut: str) -> None:
    name = f"modgate_outage_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await probe(f"{PG_URL.rpartition('/')[0]}/{name}", outage, rate, cut)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds Postgres is cut")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--cut", choices=("refuse", "blackhole"), default="refuse")
    args = parser.parse_args()
    asyncio.run(main(args.outage, args.rate, args.cut))
