"""CPU time per request and latency of modgate's full pipeline at a fixed request rate, for
variants of it side by side: the steadier measure of a change on a small, shared machine.

    .venv/bin/python bench/cpu_bench.py [--rate 1500] [--seconds 4] [--rounds 4] [VARIANT ...]

A VARIANT is `name:KEY=VALUE,KEY=VALUE`, environment for that gateway: settings
(`nolog:MODGATE_REQUEST_LOG_ENABLED=false`) or another checkout's code
(`before:PYTHONPATH=/tmp/worktree-of-an-older-commit`). Without any, one gateway as it is.

Every variant is a `modgate serve` (one worker, pinned to CPU 0) on one throwaway database
with the bench module, key and nginx upstream of bench/run.py; wrk, paced by bench/paced.lua
at the given rate, drives each in turn for `--rounds` alternating rounds. Per round: the
gateway process's CPU time (utime + stime from /proc) divided by the requests served, and
wrk's p50/p99. A fixed rate makes the CPU figure independent of how fast the load generator
and the other processes happen to run, which a throughput figure is not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import (
    REDIS_URL,
    create_database,
    ensure_tools,
    nginx,
    seed_bench_module,
    start_gateway,
    wrk,
)

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, spec = text.partition(":")
    env = dict(item.split("=", 1) for item in spec.split(",") if item)
    return name, env


async def measure(args: argparse.Namespace) -> None:
    variants = [parse_variant(v) for v in args.variants] or [("modgate", {})]
    async with contextlib.AsyncExitStack() as stack:
        cwd = stack.enter_context(tempfile.TemporaryDirectory())
        _, port = await nginx(stack, cwd, "upstream", "location / { return 200 '{\"ok\":true}'; }")
        dsn = await create_database(stack)
        key = await seed_bench_module(dsn, f"http://127.0.0.1:{port}")
        Path(cwd, "gw.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))
        base_env = {
            "MODGATE_DATABASE_URL": dsn,
            "MODGATE_REDIS_URL": REDIS_URL,
            "MODGATE_RATE_LIMIT_ENABLED": "true",
            "MODGATE_ACCESS_LOG": "false",
            "MODGATE_REDIS_TIMEOUT_SECONDS": "0.05",
        }
        gateways = [
            (name, await start_gateway(stack, cwd, 1, {**base_env, **env}))
            for name, env in variants
        ]
        headers = [f"X-API-Key: {key}"]
        for _, proc in gateways:  # warm-up
            await wrk(f"{proc.url}/api/modules/bench/items/7", 1, 16, headers)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in gateways}
        for _ in range(args.rounds):
            for name, proc in gateways:
                pid = proc.proc.pid  # type: ignore[union-attr]
                before = cpu_seconds(pid)
                run = await wrk(
                    f"{proc.url}/api/modules/bench/items/7",
                    args.seconds,
                    16,
                    headers,
                    rate=args.rate,
                )
                served = run["rps"] * args.seconds
                cpu_us = (cpu_seconds(pid) - before) / served * 1e6
                results[name].append((cpu_us, run["p50_ms"], run["p99_ms"]))
    print(
        f"modgate at {args.rate:g} req/s (wrk paced, 16 connections, {args.seconds} s x "
        f"{args.rounds} alternating rounds; gateway on CPU 0)"
    )
    print(f"  {'variant':12s} {'CPU µs/request (each round)':36s} {'median':>7s}  p50 / p99 ms")
    for name, rows in results.items():
        cpu = " ".join(f"{c:5.0f}" for c, _, _ in rows)
        latency = "  ".join(f"{p50:.2f}/{p99:.2f}" for _, p50, p99 in rows)
        median = statistics.median(c for c, _, _ in rows)
        print(f"  {name:12s} {cpu:36s} {median:7.0f}  {latency}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1500)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("variants", nargs="*", metavar="VARIANT")
    args = parser.parse_args()
    ensure_tools()
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
