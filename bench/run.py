"""`make bench`: modgate side by side with nginx and a bare aiohttp forwarder, in one run.

    .venv/bin/python bench/run.py [--seconds 5] [--rounds 3] [--connections 32] [--json]
    .venv/bin/python bench/run.py --smoke        # CI: a short run, same code paths
    .venv/bin/python bench/run.py --throughput-only   # the side-by-side table, nothing else

On loopback: nginx returning a small fixed body (the upstream), then each proxy in front of it:
nginx proxy_pass (the C reference), a bare aiohttp forwarder (the floor cost of aiohttp), and
modgate with its full pipeline (API key from Postgres, Redis token bucket, metrics, request
log rows written to module_api_logs, a route with a :param), with 1 and 2 workers. Proxies run
on CPU 0, wrk and the upstream on CPU 1 (when there are two), each target driven by wrk at
fixed connections in alternating rounds; the best round counts. Then latency at a fixed rate,
half of modgate's peak (1 worker), straight to the upstream and through each proxy: wrk paced
by bench/paced.lua at PACED_CONNECTIONS connections, alternating rounds, the lowest p99 of each
counts; the difference from the direct upstream is what a proxy adds (nginx proxy_pass and the
bare forwarder show how much of that the machine's topology costs any proxy). Then, as
subprocesses: route matching at 10/10k/100k routes, the memory of a worker holding 100k
routes and 100k keys, the handler pool's per-call overhead, and NOTIFY propagation.

Exit status: 0 when everything ran, whether or not the speed targets were met (they are
reported, never enforced); 1 when something is broken: a target that does not start or dies,
non-2xx responses or refused connections, an extra bench that crashes. Every process and
database the run starts is stopped or dropped on the way out, on failure and on SIGTERM too.

wrk and nginx are installed with apt-get when missing (as root). Needs Postgres
(TEST_DATABASE_URL) and Redis (TEST_REDIS_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
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
PACED_SCRIPT = ROOT / "bench/paced.lua"
# Enough connections to cover the latency at the paced rate, few enough that the pacing, not
# the connection count, sets the load (16 held 8k req/s on the upstream within 0.1%).
PACED_CONNECTIONS = 16
TARGET_ADDED_P99_MS = 2.0
TARGET_MODGATE_OVER_BARE = 0.8
EXTRA_TIMEOUT_S = 300


class BenchBroken(Exception):
    """Something is broken (as opposed to slow): the run exits 1."""


def ensure_tools() -> None:
    """wrk and nginx, from Debian packages when missing (a fresh CI machine runs as root)."""
    missing = [tool for tool in ("wrk", "nginx") if not shutil.which(tool)]
    if not missing:
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise SystemExit(f"{', '.join(missing)} needed: apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    still = [tool for tool in missing if not shutil.which(tool)]
    if still:
        raise SystemExit(f"installed {' '.join(missing)} but {', '.join(still)} is not on PATH")


def pinned(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if TWO_CPUS else []


async def wait_listening(
    port: int, alive: Callable[[], bool], what: str, timeout: float = 10
) -> None:
    """Until something accepts on 127.0.0.1:port; BenchBroken if `what` exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise BenchBroken(f"{what} exited at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        await asyncio.sleep(0.05)
    raise BenchBroken(f"{what} is not listening on port {port} after {timeout:.0f} s")


async def stop_popen(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def nginx(
    stack: contextlib.AsyncExitStack, cwd: str, name: str, body: str
) -> tuple[subprocess.Popen[bytes], int]:
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
    stack.push_async_callback(stop_popen, proc)
    try:
        await wait_listening(port, lambda: proc.poll() is None, f"nginx ({name})")
    except BenchBroken as exc:
        log = Path(cwd, f"{name}.log")
        raise BenchBroken(f"{exc}\n{log.read_text() if log.exists() else ''}") from None
    return proc, port


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_SCALE = {"us": 0.001, "ms": 1.0, "s": 1000.0}


async def wrk(
    url: str, seconds: int, connections: int, headers: list[str], *, rate: float | None = None
) -> dict[str, float]:
    """One wrk run: req/s, p50 and p99 in ms; at `rate` req/s (paced.lua) when given.

    BenchBroken on non-2xx responses, refused connections or no responses at all.
    """
    args = [*pinned("1"), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        args += ["-H", header]
    args.append(url)
    if rate is not None:
        args[-1:-1] = ["-s", str(PACED_SCRIPT)]
        args += ["--", f"{rate:.1f}"]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        raw, _ = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled (SIGTERM, Ctrl-C): wrk goes too
            proc.kill()
            await proc.wait()
    out = raw.decode(errors="replace")
    requests = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if proc.returncode != 0 or requests is None:
        raise BenchBroken(f"wrk {url} failed (exit {proc.returncode}):\n{out}")
    if "Non-2xx" in out:
        raise BenchBroken(f"{url}: non-2xx responses\n{out}\n{await sample(url, headers)}")
    errors = _SOCKET_ERRORS.search(out)
    if errors and int(errors.group(1)):
        raise BenchBroken(f"{url}: connections refused\n{out}")
    rps = float(requests.group(1))
    if rps == 0:
        raise BenchBroken(f"{url}: no responses\n{out}")
    latency = {f"p{p}_ms": float(v) * _SCALE[u] for p, v, u in _LATENCY.findall(out)}
    return {"rps": rps, **latency}


async def sample(url: str, headers: list[str]) -> str:
    """One response to `url`, status and body, for the message that reports a failure."""
    fields = dict(header.split(": ", 1) for header in headers)
    try:
        async with aiohttp.ClientSession() as session, session.get(url, headers=fields) as r:
            return f"one response: {r.status} {(await r.read())[:500]!r}"
    except aiohttp.ClientError as exc:
        return f"one request: {exc!r}"


async def create_database(stack: contextlib.AsyncExitStack) -> str:
    """A throwaway database, dropped when `stack` closes; returns its DSN."""
    name = f"modgate_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(PG_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    stack.push_async_callback(drop)
    return f"{PG_URL.rpartition('/')[0]}/{name}"


async def seed_bench_module(dsn: str, upstream: str) -> str:
    """The schema, the bench module (GET /items/:id, proxied) and a key; returns the key."""
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
    try:
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
    finally:
        await conn.close()
    return key


async def start_serve(stack: contextlib.AsyncExitStack, proc: ServeProcess, what: str) -> None:
    """`proc` started and ready, stopped when `stack` closes; BenchBroken if it never is."""
    stack.push_async_callback(proc.stop)  # before start: a start that times out still stops
    try:
        await proc.start()
    except AssertionError as exc:  # "exited early" quotes the output, a timeout does not
        output = proc.output_so_far()
        detail = str(exc) if output in str(exc) else f"{exc}\n{output[-4000:]}"
        raise BenchBroken(f"{what} did not start: {detail}") from None


async def start_gateway(
    stack: contextlib.AsyncExitStack, cwd: str, workers: int, env: dict[str, str]
) -> ServeProcess:
    proc = ServeProcess("--config", "gw.yaml", "--workers", str(workers), env=env, cwd=cwd)
    await start_serve(stack, proc, f"modgate serve, {workers} worker(s)")
    if TWO_CPUS:  # the supervisor and its workers: CPU 0, or both for 2 workers
        cpus = "0" if workers == 1 else "0,1"
        subprocess.run(
            ["taskset", "-apc", cpus, str(proc.proc.pid)],  # type: ignore[union-attr]
            capture_output=True,
            check=False,
        )
    return proc


async def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """The throughput rows, the latency at half of the peak (unless --throughput-only) and
    how many request log rows the gateways wrote."""
    async with contextlib.AsyncExitStack() as stack:
        cwd = stack.enter_context(tempfile.TemporaryDirectory())
        upstream, upstream_port = await nginx(
            stack, cwd, "upstream", "location / { return 200 '{\"ok\":true}'; }"
        )
        base = f"http://127.0.0.1:{upstream_port}"
        reference, ref_port = await nginx(
            stack,
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
        stack.push_async_callback(stop_popen, bare)
        await wait_listening(bare_port, lambda: bare.poll() is None, "bare aiohttp forwarder")
        dsn = await create_database(stack)
        key = await seed_bench_module(dsn, base)
        Path(cwd, "gw.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))
        env = {
            "MODGATE_DATABASE_URL": dsn,
            "MODGATE_REDIS_URL": REDIS_URL,
            "MODGATE_RATE_LIMIT_ENABLED": "true",
            "MODGATE_ACCESS_LOG": "false",
            "MODGATE_REDIS_TIMEOUT_SECONDS": "0.05",
        }
        gateways = {workers: await start_gateway(stack, cwd, workers, env) for workers in (1, 2)}
        await asyncio.sleep(1.0)
        if TWO_CPUS:
            for child in Path(f"/proc/{gateways[1].proc.pid}/task").iterdir():  # type: ignore[union-attr]
                subprocess.run(["taskset", "-pc", "0", child.name], capture_output=True)

        def check_alive() -> None:
            for name, proc in (("nginx upstream", upstream), ("nginx proxy", reference)):
                if proc.poll() is not None:
                    raise BenchBroken(f"{name} exited (status {proc.returncode})")
            if bare.poll() is not None:
                raise BenchBroken(f"the bare aiohttp forwarder exited (status {bare.returncode})")
            for workers, gateway in gateways.items():
                if gateway.proc is None or gateway.proc.returncode is not None:
                    tail = gateway.output_so_far()[-4000:]
                    raise BenchBroken(f"modgate serve, {workers} worker(s), exited:\n{tail}")

        modgate_url = f"{gateways[1].url}/api/modules/bench/items/7"
        auth = [f"X-API-Key: {key}"]
        targets = [
            ("nginx proxy_pass", f"http://127.0.0.1:{ref_port}/items/7", []),
            ("bare aiohttp", f"http://127.0.0.1:{bare_port}/items/7", []),
            ("modgate, 1 worker", modgate_url, auth),
            ("modgate, 2 workers", f"{gateways[2].url}/api/modules/bench/items/7", auth),
        ]
        best: dict[str, dict[str, float]] = {}
        for _name, url, headers in targets:  # warm-up
            await wrk(url, 1, args.connections, headers)
        for _ in range(args.rounds):  # alternating rounds: drift hits every target alike
            for name, url, headers in targets:
                result = await wrk(url, args.seconds, args.connections, headers)
                if name not in best or result["rps"] > best[name]["rps"]:
                    best[name] = result
        check_alive()
        rows = [{"target": name, **best[name]} for name, _, _ in targets]
        latency: dict[str, Any] = {}
        if not args.throughput_only:
            rate = best["modgate, 1 worker"]["rps"] / 2
            # Every proxy at the same rate: what any proxy in this topology costs (nginx,
            # bare aiohttp) tells the machine's share of the figure from modgate's own.
            paced = [
                ("nginx upstream, direct", f"{base}/items/7", []),
                ("nginx proxy_pass", f"http://127.0.0.1:{ref_port}/items/7", []),
                ("bare aiohttp", f"http://127.0.0.1:{bare_port}/items/7", []),
                ("modgate, 1 worker", modgate_url, auth),
            ]
            latency = await at_fixed_rate(paced, rate, args)
            check_alive()
        conn = await asyncpg.connect(dsn)
        logged = await conn.fetchval("SELECT count(*) FROM module_api_logs")
        await conn.close()
        return {"rows": rows, "latency_at_half_peak": latency, "module_api_logs_rows": logged}


async def at_fixed_rate(
    targets: list[tuple[str, str, list[str]]], rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """p50/p99 of each target at `rate` req/s, the lowest p99 of alternating rounds each."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, url, headers in targets:
            result = await wrk(url, args.seconds, PACED_CONNECTIONS, headers, rate=rate)
            if name not in best or result["p99_ms"] < best[name]["p99_ms"]:
                best[name] = result
    direct, modgate = best[targets[0][0]], best[targets[-1][0]]
    added = {
        "p50_ms": modgate["p50_ms"] - direct["p50_ms"],
        "p99_ms": modgate["p99_ms"] - direct["p99_ms"],
    }
    rows = []
    for name, _, _ in targets:
        row = {"target": name, **best[name]}
        if name != targets[0][0]:
            row["added_p50_ms"] = best[name]["p50_ms"] - direct["p50_ms"]
            row["added_p99_ms"] = best[name]["p99_ms"] - direct["p99_ms"]
        rows.append(row)
    return {
        "rate": rate,
        "connections": PACED_CONNECTIONS,
        "rows": rows,
        "added": added,
        "target_p99_added_ms": TARGET_ADDED_P99_MS,
        "target_met": added["p99_ms"] <= TARGET_ADDED_P99_MS,
    }


# (name, script, arguments, arguments under --smoke)
EXTRAS: list[tuple[str, str, list[str], list[str]]] = [
    ("route matching", "bench/matcher_bench.py", [], []),
    ("memory, 100k routes + 100k keys", "bench/memory_bench.py", [], []),
    ("handler pool, per call", "bench/pool_bench.py", [], ["--requests", "200", "--seconds", "1"]),
    ("NOTIFY propagation", "bench/propagation_bench.py", ["--changes", "200"], ["--changes", "30"]),
]


def missed_target_only(script: str, returncode: int, output: str) -> bool:
    """A non-zero exit that reports a missed speed target, not a failure: only
    propagation_bench exits 1 for its target, after printing the verdict line."""
    return (
        script.endswith("propagation_bench.py")
        and returncode == 1
        and "target p99 <= " in output
        and "Traceback" not in output
    )


async def run_extra(script: str, extra: list[str]) -> tuple[int, str]:
    """One extra bench as a subprocess: (exit status, output). On cancellation it gets SIGINT,
    so its own cleanup (a dropped database, stopped gateways) runs before it exits."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / script),
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), EXTRA_TIMEOUT_S)
    except (TimeoutError, asyncio.CancelledError) as exc:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            return -1, f"(killed after {EXTRA_TIMEOUT_S} s)"
        raise
    assert proc.returncode is not None
    return proc.returncode, raw.decode(errors="replace").strip()


async def extras(smoke: bool) -> tuple[dict[str, str], list[str]]:
    """Each extra bench's output, and the names of those that broke."""
    out: dict[str, str] = {}
    broken: list[str] = []
    for name, script, full, short in EXTRAS:
        returncode, text = await run_extra(script, short if smoke else full)
        out[name] = text
        if returncode != 0 and not missed_target_only(script, returncode, text):
            broken.append(f"{name} ({script} exited {returncode})")
    return out, broken


def report(
    measured: dict[str, Any], extra: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    rows = measured["rows"]
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
        "module_api_logs_rows": measured["module_api_logs_rows"],
        "latency_at_half_peak": measured["latency_at_half_peak"],
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
    met = "met" if target >= TARGET_MODGATE_OVER_BARE else "NOT met"
    print(f"  target modgate/bare >= {TARGET_MODGATE_OVER_BARE:.2f}: {met} ({target:.2f})")
    print(f"  (module_api_logs rows written by the gateways: {result['module_api_logs_rows']})")
    if latency := result["latency_at_half_peak"]:
        print(
            f"\nlatency at half of modgate's peak ({latency['rate']:.0f} req/s asked; wrk -t1 "
            f"-c{latency['connections']} -d{result['seconds']}s paced by bench/paced.lua, "
            f"lowest p99 of {result['rounds']} alternating rounds)"
        )
        print(
            f"  {'target':22s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}"
            f" {'+p50 ms':>8s} {'+p99 ms':>8s}  (+ = over the upstream, direct)"
        )
        for row in latency["rows"]:
            plus = (
                f" {row['added_p50_ms']:8.2f} {row['added_p99_ms']:8.2f}"
                if "added_p99_ms" in row
                else ""
            )
            print(
                f"  {row['target']:22s} {row['rps']:9.0f} {row['p50_ms']:8.2f}"
                f" {row['p99_ms']:8.2f}{plus}"
            )
        added = latency["added"]
        held = min(row["rps"] for row in latency["rows"]) / latency["rate"]
        if held < 0.95:
            print(f"  (the rate was not held: {held:.0%} of the asked rate at worst)")
        print(
            f"  target p99 added <= {latency['target_p99_added_ms']:g} ms at half peak: "
            f"{'met' if latency['target_met'] else 'NOT met'} ({added['p99_ms']:.2f} ms)"
        )
    for name, text in result["extras"].items():
        print(f"\n{name}:\n" + "\n".join("  " + line for line in text.splitlines()))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--smoke", action="store_true", help="a short run for CI")
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the side-by-side table (no latency at half peak, no extra benches)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds = 1, 1
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so every process and database is cleaned up.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    ensure_tools()
    try:
        measured = await side_by_side(args)
        extra, broken = ({}, []) if args.throughput_only else await extras(args.smoke)
    except BenchBroken as exc:
        print(f"bench: broken: {exc}", file=sys.stderr)
        return 1
    result = report(measured, extra, args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    if broken:
        print(f"bench: broken: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)
