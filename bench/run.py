"""`make bench`: modgate side by side with nginx and a bare aiohttp forwarder, in one run.

    .venv/bin/python bench/run.py [--seconds 5] [--rounds 3] [--connections 32] [--json]
    .venv/bin/python bench/run.py --smoke        # CI: a short run, same code paths

On loopback: nginx returning a small fixed body (the upstream), then each proxy in front of it:
nginx proxy_pass (the C reference), a bare aiohttp forwarder (the floor cost of aiohttp), and
modgate with its full pipeline (API key from Postgres, Redis token bucket, metrics, request
log rows written to module_api_logs, a route with a :param), with 1 and 2 workers. Proxies run
on CPU 0, wrk and the upstream on CPU 1 (when there are two), each target driven by wrk at
fixed connections in alternating rounds; the best round counts. Then: route matching at
10/10k/100k routes, the memory of a worker holding 100k routes and 100k keys, and NOTIFY
propagation. wrk and nginx are installed with apt-get when missing. Needs Postgres
(TEST_DATABASE_URL) and Redis (TEST_REDIS_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.routing.manifest import parse_manifest
from proxy.store.keys import create_key
from proxy.store.migrate import migrate
from proxy.store.routes import apply_manifest
from tests.support.process import ServeProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
MODULE = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"
TWO_CPUS = (os.cpu_count() or 1) > 1 and shutil.which("taskset") is not None


def ensure_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if not shutil.which(tool)]
    if not missing:
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise SystemExit(f"{', '.join(missing)} needed: apt-get install {' '.join(missing)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def pinned(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if TWO_CPUS else []


def nginx(cwd: str, name: str, body: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = Path(cwd, f"{name}.conf")
    conf.write_text(
        f"daemon off; worker_processes 1; pid {cwd}/{name}.pid; error_log {cwd}/{name}.log;\n"
        "events { worker_connections 4096; }\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{port}; {body} }} }}\n"
    )
    proc = subprocess.Popen(
        [*pinned("1" if name == "upstream" else "0"), "nginx", "-c", str(conf), "-p", cwd]
    )
    time.sleep(0.3)
    return proc, port


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk(url: str, seconds: int, connections: int, headers: list[str]) -> dict[str, float]:
    args = [*pinned("1"), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url}: non-2xx responses\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = {f"p{p}_ms": float(v) * scale[u] for p, v, u in _LATENCY.findall(out)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, **latency}


async def modgate_database(upstream: str) -> tuple[str, str, str]:
    """A throwaway database with the bench module and a key; returns (name, dsn, key)."""
    name = f"modgate_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = f"{PG_URL.rpartition('/')[0]}/{name}"
    await migrate(dsn)
    route = {
        "path": "/items/:id",
        "method": "GET",
        "handler_type": "proxy",
        "required_scopes": ["read:items"],
        "rate_limit_per_minute": 10**9,
    }
    module = {"id": MODULE, "name": "bench", "upstream": upstream, "routes": [route]}
    conn = await asyncpg.connect(dsn)
    await apply_manifest(conn, parse_manifest({"modules": [module]}))
    _, key = await create_key(
        conn,
        module_id=MODULE,
        site_id=str(uuid.uuid4()),
        agency_id=str(uuid.uuid4()),
        name="bench",
        scopes=["read:*"],
        rate_limit_per_minute=10**9,
        rate_limit_per_day=None,
    )
    await conn.close()
    return name, dsn, key


async def side_by_side(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as cwd:
        upstream, upstream_port = nginx(
            cwd, "upstream", "location / { return 200 '{\"ok\":true}'; }"
        )
        base = f"http://127.0.0.1:{upstream_port}"
        reference, ref_port = nginx(
            cwd,
            "proxy",
            f"location / {{ proxy_pass {base}; "
            'proxy_http_version 1.1; proxy_set_header Connection ""; }',
        )
        bare_port = free_port()
        bare = subprocess.Popen(
            [
                *pinned("0"),
                sys.executable,
                str(ROOT / "bench/bare_forwarder.py"),
                str(bare_port),
                base,
            ]
        )
        db_name, dsn, key = await modgate_database(base)
        Path(cwd, "gw.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))
        env = {
            "MODGATE_DATABASE_URL": dsn,
            "MODGATE_REDIS_URL": REDIS_URL,
            "MODGATE_RATE_LIMIT_ENABLED": "true",
            "MODGATE_ACCESS_LOG": "false",
            "MODGATE_REDIS_TIMEOUT_SECONDS": "0.05",
        }
        gateways: dict[int, ServeProcess] = {}
        try:
            for workers in (1, 2):
                proc = ServeProcess(
                    "--config", "gw.yaml", "--workers", str(workers), env=env, cwd=cwd
                )
                await proc.start()
                gateways[workers] = proc
                if TWO_CPUS:  # the supervisor and its workers: CPU 0, or both for 2 workers
                    cpus = "0" if workers == 1 else "0,1"
                    subprocess.run(
                        ["taskset", "-apc", cpus, str(proc.proc.pid)],  # type: ignore[union-attr]
                        capture_output=True,
                        check=False,
                    )
            await asyncio.sleep(1.0)
            for proc in gateways.values():
                if TWO_CPUS and proc is gateways[1]:
                    for child in Path(f"/proc/{proc.proc.pid}/task").iterdir():  # type: ignore[union-attr]
                        subprocess.run(["taskset", "-pc", "0", child.name], capture_output=True)
            targets = [
                ("nginx proxy_pass", f"http://127.0.0.1:{ref_port}/items/7", []),
                ("bare aiohttp", f"http://127.0.0.1:{bare_port}/items/7", []),
                (
                    "modgate, 1 worker",
                    f"{gateways[1].url}/api/modules/bench/items/7",
                    [f"X-API-Key: {key}"],
                ),
                (
                    "modgate, 2 workers",
                    f"{gateways[2].url}/api/modules/bench/items/7",
                    [f"X-API-Key: {key}"],
                ),
            ]
            best: dict[str, dict[str, float]] = {}
            for _name, url, headers in targets:  # warm-up
                await asyncio.to_thread(wrk, url, 1, args.connections, headers)
            for _ in range(args.rounds):  # alternating rounds: drift hits every target alike
                for name, url, headers in targets:
                    result = await asyncio.to_thread(
                        wrk, url, args.seconds, args.connections, headers
                    )
                    if name not in best or result["rps"] > best[name]["rps"]:
                        best[name] = result
            conn = await asyncpg.connect(dsn)
            logged = await conn.fetchval("SELECT count(*) FROM module_api_logs")
            await conn.close()
            print(f"(module_api_logs rows written during the run: {logged})")
            return [{"target": name, **best[name]} for name, _, _ in targets]
        finally:
            for proc in gateways.values():
                await proc.stop()
            for p in (upstream, reference, bare):
                p.terminate()
                p.wait()
            admin = await asyncpg.connect(PG_URL)
            await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            await admin.close()


def extras(smoke: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, script, extra in (
        ("route matching", "bench/matcher_bench.py", []),
        ("memory, 100k routes + 100k keys", "bench/memory_bench.py", []),
        (
            "NOTIFY propagation",
            "bench/propagation_bench.py",
            ["--changes", "30" if smoke else "200"],
        ),
    ):
        result = subprocess.run(
            [sys.executable, str(ROOT / script), *extra],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        out[name] = (result.stdout + result.stderr).strip()
    return out


def report(
    rows: list[dict[str, Any]], extra: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    by = {r["target"]: r for r in rows}
    modgate, bare, ref = by["modgate, 1 worker"], by["bare aiohttp"], by["nginx proxy_pass"]
    ratios = {
        "modgate/bare": modgate["rps"] / bare["rps"],
        "modgate/nginx": modgate["rps"] / ref["rps"],
        "2 workers/1 worker": by["modgate, 2 workers"]["rps"] / modgate["rps"],
    }
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    return {
        "machine": machine,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rows": rows,
        "ratios": ratios,
        "extras": extra,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\nmodgate benchmark ({result['machine']}; wrk -t1 -c{result['connections']} "
        f"-d{result['seconds']}s, best of {result['rounds']} alternating rounds)"
    )
    print(f"  {'target':22s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for row in result["rows"]:
        print(
            f"  {row['target']:22s} {row['rps']:9.0f} {row.get('p50_ms', 0):8.2f} "
            f"{row.get('p99_ms', 0):8.2f}"
        )
    for name, value in result["ratios"].items():
        print(f"  {name:22s} {value:9.2f}")
    target = result["ratios"]["modgate/bare"]
    print(f"  target modgate/bare >= 0.80: {'met' if target >= 0.8 else 'NOT met'} ({target:.2f})")
    for name, text in result["extras"].items():
        print(f"\n{name}:\n" + "\n".join("  " + line for line in text.splitlines()))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--smoke", action="store_true", help="a short run for CI")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds = 1, 1
    ensure_tools()
    rows = await side_by_side(args)
    result = report(rows, extras(args.smoke), args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    asyncio.run(main())
