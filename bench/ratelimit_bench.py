"""What the rate limiter costs a request: the same request limited and unlimited, side by side.

    .venv/bin/python bench/ratelimit_bench.py [--seconds 5]

1. The limiter call alone (µs): RateLimiter.hit on Redis (one EVALSHA) and in process.
2. Whole requests through `modgate serve` (one worker, pinned to CPU 0; wrk on CPU 1 when the
   machine has two), with the limiter off, with in-process buckets, and with Redis, on a
   static route (the worst case: the request itself costs almost nothing) and on a route
   proxied to an nginx upstream (the usual case). The limits are too high to refuse anything.
   Prints requests/s, latency, and the ratios.

Needs wrk and nginx (Debian: apt-get install wrk nginx) and Redis (TEST_REDIS_URL, default
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
from proxy.ratelimit.redis_limiter import DEFAULT_TIMEOUT, RedisLimiter
from tests.support.process import ServeProcess, free_port

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
MODULE = str(uuid.uuid4())


async def call_cost(n: int = 20_000) -> list[tuple[str, float]]:
    client = create_redis_client(REDIS_URL, timeout=DEFAULT_TIMEOUT)
    rows = []
    mirror = LocalLimiter(capacity=100_000)
    try:
        for name, limiter in (
            ("in process", RateLimiter(local=LocalLimiter(capacity=100_000))),
            ("Redis (EVALSHA)", RateLimiter(local=mirror,
                                            redis=RedisLimiter(client, mirror=mirror))),
        ):  # fmt: skip
            await limiter.start()
            await limiter.hit("warm", 10**9, 0)
            started = time.perf_counter()
            for i in range(n):
                await limiter.hit(f"{MODULE}:ip:{i % 100}", 10**9, 0)
            rows.append((name, (time.perf_counter() - started) / n * 1e6))
            await limiter.close()
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


def start_nginx(cwd: str) -> tuple[subprocess.Popen[bytes], int]:
    """A fixed-response upstream, pinned with wrk (CPU 1) so it never competes with modgate."""
    port = free_port()
    conf = Path(cwd, "nginx.conf")
    conf.write_text(
        f"daemon off; worker_processes 1; pid {cwd}/nginx.pid; error_log {cwd}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{port};\n"
        "  location / { return 200 '{\"ok\":true}'; } } }\n"
    )
    pin = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []
    proc = subprocess.Popen([*pin, "nginx", "-c", str(conf), "-p", cwd])
    time.sleep(0.3)
    return proc, port


async def end_to_end(seconds: int, rounds: int) -> list[tuple[str, float, str]]:
    limit = {"requires_auth": False, "rate_limit_per_minute": 10**9}
    rows = []
    with tempfile.TemporaryDirectory() as cwd:
        nginx, nginx_port = start_nginx(cwd)
        module = {
            "id": MODULE, "name": "b", "upstream": f"http://127.0.0.1:{nginx_port}",
            "routes": [
                {"path": "/r", "method": "GET", "handler_type": "static", "handler_code": '"ok"',
                 **limit},
                {"path": "/p/:id", "method": "GET", "handler_type": "proxy", **limit},
            ],
        }  # fmt: skip
        routes = Path(cwd, "routes.yaml")
        routes.write_text(yaml.safe_dump({"modules": [module]}))
        Path(cwd, "gw.yaml").write_text("log_level: warning\n")
        for name, env in (
            ("limiter off", {"MODGATE_RATE_LIMIT_ENABLED": "false"}),
            ("in-process buckets", {"MODGATE_RATE_LIMIT_ENABLED": "true"}),
            ("Redis buckets", {"MODGATE_RATE_LIMIT_ENABLED": "true",
                               "MODGATE_REDIS_URL": REDIS_URL}),
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
                for route, path in (("static", "/r"), ("proxied", "/p/1")):
                    url = f"{proc.url}/api/modules/b{path}"
                    await asyncio.to_thread(wrk, url, 1)  # warm up
                    runs = [await asyncio.to_thread(wrk, url, seconds) for _ in range(rounds)]
                    rps, latency = max(runs)  # best of the rounds: the least disturbed one
                    rows.append((f"{route}, {name}", rps, latency))
            finally:
                await proc.stop()
        nginx.terminate()
        nginx.wait()
    return rows


async def main(seconds: int, rounds: int) -> None:
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed: apt-get install {tool}")
    print("limiter call alone (µs per call, 20,000 calls)")
    for name, micros in await call_cost():
        print(f"  {name:22s} {micros:8.1f} µs")
    print(f"\nwhole requests, 1 worker, wrk -t1 -c32 -d{seconds}s, best of {rounds}")
    rows = await end_to_end(seconds, rounds)
    off = {name.split(",")[0]: rps for name, rps, _ in rows if name.endswith("limiter off")}
    for route in ("static", "proxied"):
        for name, rps, latency in (r for r in rows if r[0].startswith(route)):
            extra_us = (1 / rps - 1 / off[route]) * 1e6
            print(f"  {name:30s} {rps:8.0f} req/s  avg {latency:>7s}  "
                  f"{rps / off[route]:6.1%} of off  ({extra_us:+5.1f} µs/request)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rounds))
