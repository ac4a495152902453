"""The rate limiter on a busy machine: what two gateways sharing Redis admit, and the Redis
round trip's distribution behind the default `redis_timeout_seconds`.

    .venv/bin/python bench/limiter_load_bench.py [--rounds 5] [--no-load] [--rtt-seconds 20]
                                                 [VARIANT ...]

A VARIANT is `name:KEY=VALUE,...`, environment for both gateways of that run: settings
(`tight:MODGATE_REDIS_TIMEOUT_SECONDS=0.005`) or another checkout's code
(`before:PYTHONPATH=/tmp/rl_base`, after `git worktree add /tmp/rl_base HEAD`). Without any,
one run with the default settings.

1. Round trip (unless --rtt-seconds 0): `RedisLimiter.hit` on a pre-opened connection, one
   call at a time and 50 at once, idle and then with both cores busy; percentiles in ms.
2. Per variant, on a private redis-server and two `modgate serve` processes with default
   settings (only `redis_url` set), with `stress-ng --cpu N` (N = the CPUs) running for the
   whole run unless --no-load (a busy loop per CPU when stress-ng is missing):
   - 160 sequential requests with one API key limited to 60/min, alternating gateways;
   - `--rounds` rounds of 200 concurrent requests on a fresh 60/min route, half per gateway.
   Prints admitted counts (a 60/min bucket admits 60, 61 when a second passes), the gateways'
   Redis errors and local decisions, and the round trips as the gateways saw them
   (`modgate_redis_call_seconds`).

Needs redis-server (tests/support/redis_server.py) and, for the load, stress-ng (Debian:
apt-get install stress-ng). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.process import ServeProcess
from tests.support.redis_server import RedisServer

PER_MINUTE = 60
SEQUENTIAL = 160
CONCURRENT = 200
SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"
KEY = "dmc_live_" + "5" * 64
CPUS = os.cpu_count() or 1


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, spec = text.partition(":")
    return name, dict(item.split("=", 1) for item in spec.split(",") if item)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@contextlib.contextmanager
def busy_cpus(enabled: bool, seconds: float) -> Iterator[str]:
    """Every CPU kept busy for at most `seconds` (bounded even if this process dies)."""
    if not enabled:
        yield "idle"
        return
    bound = str(max(1, int(seconds)))
    if shutil.which("stress-ng"):
        what = f"stress-ng --cpu {CPUS}"
        args = [["timeout", bound, "stress-ng", "--cpu", str(CPUS), "--timeout", f"{bound}s",
                 "-q"]]  # fmt: skip
    else:
        what = f"{CPUS} busy loops"
        loop = "while True: pass"
        args = [["timeout", bound, sys.executable, "-c", loop] for _ in range(CPUS)]
    procs = [
        subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for a in args
    ]
    time.sleep(0.5)  # let them take the CPUs
    try:
        yield what
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


# -- 1. the round trip ---------------------------------------------------------------------


async def round_trips(url: str, seconds: float, concurrency: int) -> list[float]:
    """Milliseconds per `RedisLimiter.hit`, `concurrency` calls at a time, every 2 ms."""
    from proxy.ratelimit.limiter import create_redis_client
    from proxy.ratelimit.redis_limiter import RedisLimiter

    client = create_redis_client(url, timeout=1.0)
    limiter = RedisLimiter(client, timeout=1.0)  # a budget nothing reaches: measure, not judge
    prefix = f"rtt-{uuid.uuid4().hex}"
    try:
        with contextlib.suppress(AttributeError):  # a checkout without start() connects lazily
            await limiter.start()
        await limiter.hit(prefix, 10**9, 0)

        async def one(i: int) -> float:
            started = time.perf_counter()
            await limiter.hit(f"{prefix}:{i % 50}", 10**9, 0)
            return (time.perf_counter() - started) * 1000

        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            samples += await asyncio.gather(*(one(i) for i in range(concurrency)))
            await asyncio.sleep(0.002)
        return samples
    finally:
        with contextlib.suppress(AttributeError):
            await limiter.close()
        await client.aclose()


def rtt_row(label: str, samples: list[float]) -> str:
    cells = " ".join(f"p{p:g} {percentile(samples, p):6.2f}" for p in (50, 90, 99, 99.9))
    return f"  {label:<28} n={len(samples):>6}  {cells}  max {max(samples):6.2f} ms"


async def measure_round_trips(redis: RedisServer, seconds: float, load: bool) -> None:
    print(f"Redis round trip of the limiter, {seconds:g} s each (ms):")
    for loaded in (False, True) if load else (False,):
        with busy_cpus(loaded, 2 * seconds + 10) as what:
            for concurrency in (1, 50):
                samples = await round_trips(redis.url, seconds, concurrency)
                print(rtt_row(f"{what}, {concurrency} at a time", samples))


# -- 2. two gateways ---------------------------------------------------------------------


def write_routes(path: Path, rounds: int) -> tuple[str, list[str]]:
    """One module for the keyed sequential run and one per concurrent round (fresh buckets)."""
    keyed = str(uuid.uuid4())
    per_round = [str(uuid.uuid4()) for _ in range(rounds)]
    route = {"path": "/hello", "method": "GET", "handler_type": "static",
             "handler_code": '{"v": 1}'}  # fmt: skip
    modules = [{"id": keyed, "name": "keyed", "routes": [{**route, "requires_auth": True}]}]
    modules += [
        {"id": m, "name": f"round{i}",
         "routes": [{**route, "requires_auth": False, "rate_limit_per_minute": PER_MINUTE}]}
        for i, m in enumerate(per_round)
    ]  # fmt: skip
    key = {"name": "bench", "module_id": keyed, "site_id": SITE, "key_prefix": KEY[:12],
           "key_hash": hashlib.sha256(KEY.encode()).hexdigest(), "scopes": ["*"],
           "rate_limit_per_minute": PER_MINUTE}  # fmt: skip
    path.write_text(yaml.safe_dump({"modules": modules, "api_keys": [key]}))
    return keyed, per_round


async def scrape(session: aiohttp.ClientSession, proc: ServeProcess) -> dict[str, float]:
    async with session.get(f"{proc.admin_url}/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "modgate_redis_errors_total":
                out["redis errors"] = out.get("redis errors", 0) + s.value
            elif s.name == "modgate_ratelimit_decisions_total" and s.labels["backend"] != "redis":
                out["not by Redis"] = out.get("not by Redis", 0) + s.value
            elif s.name == "modgate_redis_call_seconds_bucket":
                out[f"le {s.labels['le']}"] = out.get(f"le {s.labels['le']}", 0) + s.value
    return out


def histogram_row(samples: dict[str, float]) -> str:
    bounds = sorted(
        (float(k[3:]), v) for k, v in samples.items() if k.startswith("le ") and k != "le +Inf"
    )
    total = samples.get("le +Inf", 0)
    if not total:
        return "no modgate_redis_call_seconds (an older checkout)"
    cells = []
    for bound, count in bounds:
        if count < total:
            cells.append(f"> {bound * 1000:g} ms: {int(total - count)}")
    return f"{int(total)} round trips; " + (", ".join(cells) if cells else "all within 0.25 ms")


@contextlib.asynccontextmanager
async def gateways(
    cwd: Path, redis: RedisServer, env: dict[str, str]
) -> AsyncIterator[list[ServeProcess]]:
    base = {"MODGATE_RATE_LIMIT_ENABLED": "true", "MODGATE_REDIS_URL": redis.url,
            "MODGATE_ACCESS_LOG": "false", **env}  # fmt: skip
    procs = [
        ServeProcess("--config", str(cwd / "gw.yaml"), "--routes-file", str(cwd / "routes.yaml"),
                     env=base, cwd=str(cwd))
        for _ in range(2)
    ]  # fmt: skip
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield procs
    finally:
        await asyncio.gather(*(p.stop() for p in procs))


async def run_variant(name: str, env: dict[str, str], rounds: int, load: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp) as redis:
        cwd = Path(tmp)
        (cwd / "gw.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))
        keyed, per_round = write_routes(cwd / "routes.yaml", rounds)
        async with gateways(cwd, redis, env) as procs:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def get(i: int, module: str, headers: dict[str, str]) -> int:
                    url = f"{procs[i % 2].url}/api/modules/{module}/hello"
                    async with session.get(url, headers=headers) as response:
                        await response.read()
                        return response.status

                for i in range(2):  # connections open, routes loaded, Redis warm
                    await get(i, per_round[0], {"X-API-Key": "dmc_live_warm"})
                with busy_cpus(load, 300) as what:
                    started = time.perf_counter()
                    statuses = [await get(i, keyed, {"X-API-Key": KEY}) for i in range(SEQUENTIAL)]
                    took = time.perf_counter() - started
                    sequential = (statuses.count(200), took, sorted(set(statuses)))
                    concurrent = []
                    for module in per_round:
                        got = await asyncio.gather(*(get(i, module, {}) for i in range(CONCURRENT)))
                        concurrent.append((got.count(200), sorted(set(got))))
                metrics = [await scrape(session, p) for p in procs]
        log = "".join([await p.output() for p in procs])
    print(f"\n{name}: 2 gateways, {what}")
    admitted, took, seen = sequential
    print(f"  {SEQUENTIAL} sequential requests, one 60/min key: {admitted} admitted "
          f"({took:.1f} s; statuses {seen})")  # fmt: skip
    counts = ", ".join(str(n) for n, _ in concurrent)
    seen_all = sorted({s for _, statuses in concurrent for s in statuses})
    print(f"  {CONCURRENT} concurrent requests, a fresh 60/min route, {rounds} rounds: "
          f"{counts} admitted (statuses {seen_all})")  # fmt: skip
    for i, samples in enumerate(metrics):
        errors, local = int(samples.get("redis errors", 0)), int(samples.get("not by Redis", 0))
        print(f"  gateway {i}: Redis errors {errors}, decided without Redis {local}; "
              f"{histogram_row(samples)}")  # fmt: skip
    failing = [line for line in log.splitlines() if "failing" in line or "answers again" in line]
    for line in failing[:6]:
        print(f"  log: {line[:160]}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rtt-seconds", type=float, default=20.0)
    parser.add_argument("--no-load", action="store_true", help="leave the CPUs idle")
    parser.add_argument("variants", nargs="*")
    args = parser.parse_args()
    load = not args.no_load
    if args.rtt_seconds > 0:
        with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp) as redis:
            await measure_round_trips(redis, args.rtt_seconds, load)
    for name, env in [parse_variant(v) for v in args.variants] or [("modgate", {})]:
        await run_variant(name, env, args.rounds, load)


if __name__ == "__main__":
    asyncio.run(main())
