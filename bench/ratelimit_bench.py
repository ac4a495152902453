"""What the rate limiter costs a request: the same request limited and unlimited, side by side.

    .venv/bin/python bench/ratelimit_bench.py [--seconds 5]

1. The limiter call alone (µs): RateLimiter.hit on Redis (one EVALSHA) and in process.
2. Whole requests through `modgate serve` (one worker, pinned to CPU 0; wrk on CPU 1 when the
   machine has two): a static route with a limit too high to refuse, with the limiter off,
   with in-process buckets, and with Redis. Prints requests/s, latency, and the ratios.

Needs wrk (Debian: apt-get install wrk) and Redis (TEST_REDIS_URL, default
redis://127.0.0.1:6379/15). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.ratelimit.limiter import RateLimiter, create_redis_client
from proxy.ratelimit.local_limiter import LocalLimiter
from proxy.ratelimit.redis_limiter import RedisLimiter
from tests.support.process import ServeProcess

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
MODULE = str(uuid.uuid4())


async def call_cost(n: int = 20_000) -> list[tuple[str, float]]:
    client = create_redis_client(REDIS_URL, timeout=0.05)
    rows = []
    try:
        for name, limiter in (
            ("in process", RateLimiter(local=LocalLimiter(capacity=100_000))),
            ("Redis (EVALSHA)", RateLimiter(local=LocalLimiter(capacity=10),
                                            redis=RedisLimiter(client), timeout=0.05)),
        ):  # fmt: skip
            await limiter.hit("warm", 10**9, 0)
            started = time.perf_counter()
            for i in range(n):
                await limiter.hit(f"{MODULE}:ip:{i % 100}", 10**9, 0)
            rows.append((name, (time.perf_counter() - started) / n * 1e6))
    finally:
        await client.aclose()
    return rows


def wrk(url: str, seconds: int) -> tuple[float, str]:
    pin = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []
    out = subprocess.run(
        [*pin, "wrk", "-t1", "-c32", f"-d{seconds}s", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = re.search(r"Latency\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    if "Non-2xx" in out:
        raise SystemExit(f"unexpected non-2xx responses:\n{out}")
    return rps, latency


async def end_to_end(seconds: int, rounds: int) -> list[tuple[str, float, str]]:
    route = {"path": "/r", "method": "GET", "handler_type": "static", "handler_code": '"ok"',
             "requires_auth": False, "rate_limit_per_minute": 10**9}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as cwd:
        routes = Path(cwd, "routes.yaml")
        routes.write_text(
            yaml.safe_dump({"modules": [{"id": MODULE, "name": "b", "routes": [route]}]})
        )
        Path(cwd, "gw.yaml").write_text("log_level: warning\n")
        for name, env in (
            ("limiter off", {"MODGATE_RATE_LIMIT_ENABLED": "false"}),
            ("in-process buckets", {"MODGATE_RATE_LIMIT_ENABLED": "true"}),
            ("Redis buckets", {"MODGATE_RATE_LIMIT_ENABLED": "true", "MODGATE_REDIS_URL": REDIS_URL,
                               "MODGATE_REDIS_TIMEOUT_SECONDS": "0.05"}),
        ):  # fmt: skip
            proc = ServeProcess(
                "--config", "gw.yaml", "--routes-file", str(routes), env=env, cwd=cwd
            )
            await proc.start()
            try:
                assert proc.proc is not None
                if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
                    subprocess.run(["taskset", "-pc", "0", str(proc.proc.pid)],
                                   capture_output=True, check=True)  # fmt: skip
                url = f"{proc.url}/api/modules/b/r"
                await asyncio.to_thread(wrk, url, 1)  # warm up
                runs = [await asyncio.to_thread(wrk, url, seconds) for _ in range(rounds)]
                rps, latency = max(runs)  # best of the rounds: the least disturbed one
                rows.append((name, rps, latency))
            finally:
                await proc.stop()
    return rows


async def main(seconds: int, rounds: int) -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    print("limiter call alone (µs per call, 20,000 calls)")
    for name, micros in await call_cost():
        print(f"  {name:22s} {micros:8.1f} µs")
    print(f"\nwhole requests, static route, 1 worker, wrk -t1 -c32 -d{seconds}s, best of {rounds}")
    rows = await end_to_end(seconds, rounds)
    base = rows[0][1]
    for name, rps, latency in rows:
        print(
            f"  {name:22s} {rps:10.0f} req/s  avg latency {latency:>8s}  {rps / base:6.1%} of off"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rounds))
