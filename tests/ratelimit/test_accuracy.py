"""N gateways sharing one Redis admit what one gateway would: capacity + refill x elapsed.

Strategy: three `modgate serve` processes on one routes file and one private redis-server,
hammered together by client tasks spread over them for about 3 s; every request comes from
127.0.0.1 to one route, so all share one bucket (module + caller). The count of 200s is
compared with the token bucket's theoretical count, then the same load runs against one
gateway (a second module, so a fresh bucket) for comparison.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.process import ServeProcess
from tests.support.redis_server import RedisServer

PER_MINUTE = 600  # capacity 600, refill 10 per second
REFILL = PER_MINUTE / 60
LOAD_SECONDS = 3.0
CLIENTS = 12  # the same load whether spread over 3 gateways or sent to one
TOLERANCE = 0.01

SHARED = "0b9f8a36-5c1e-4d7a-8f2b-3e6d9c4a1b70"  # hit through three gateways
SINGLE = "a4c7e2d1-9b3f-4e8a-b6d5-1f2e3c4d5a69"  # hit through one


def write_routes(path: Path) -> None:
    route = {
        "path": "/hello",
        "method": "GET",
        "handler_type": "static",
        "handler_code": '{"v": 1}',
        "requires_auth": False,
        "rate_limit_per_minute": PER_MINUTE,
    }
    modules = [
        {"id": SHARED, "name": "shared", "routes": [route]},
        {"id": SINGLE, "name": "single", "routes": [route]},
    ]
    path.write_text(yaml.safe_dump({"modules": modules}))


@dataclass
class Load:
    """What a run saw: per admitted request, when it was sent and when its 200 came back."""

    sent: list[float] = field(default_factory=list)
    received: list[float] = field(default_factory=list)
    refused: int = 0
    other: dict[int, int] = field(default_factory=dict)

    @property
    def admitted(self) -> int:
        return len(self.sent)

    def elapsed_bounds(self) -> tuple[float, float]:
        """Bounds on the time between the first and the last admission in Redis.

        Each admitted request was decided by Redis between its send and its 200's receipt.
        So the first admission came at or after the earliest send of an admitted request and
        at or before the earliest receipt; the last admission at or after the latest send and
        at or before the latest receipt. Hence
            latest send - earliest receipt  <=  elapsed  <=  latest receipt - earliest send.
        """
        return max(self.sent) - min(self.received), max(self.received) - min(self.sent)


async def hammer(urls: list[str], seconds: float) -> Load:
    load = Load()
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession, url: str) -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                received = time.perf_counter()
            if response.status == 200:
                load.sent.append(sent)
                load.received.append(received)
            elif response.status == 429:
                load.refused += 1
            else:
                load.other[response.status] = load.other.get(response.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, urls[i % len(urls)]) for i in range(CLIENTS)))
    return load


def judge(label: str, load: Load) -> float:
    """Print and check the run against the bucket's arithmetic; the error in %."""
    assert load.other == {}, f"{label}: unexpected statuses {load.other}"
    assert load.refused > load.admitted, f"{label}: the bucket was never drained"
    low, high = load.elapsed_bounds()
    # Admissions need a token each: at most capacity + refill x elapsed, and under constant
    # pressure at least that less one token. The tighter bound to compare with is the upper
    # elapsed (the lower one differs by two round trips, a small fraction of a token).
    theoretical = PER_MINUTE + REFILL * high
    error = 100 * (load.admitted - theoretical) / theoretical
    print(
        f"\n{label}: admitted {load.admitted} (refused {load.refused}) over "
        f"{low:.3f}..{high:.3f} s; theoretical {PER_MINUTE} + {REFILL:g} x {high:.3f} = "
        f"{theoretical:.1f} (from the lower elapsed: {PER_MINUTE + REFILL * low:.1f}); "
        f"error {error:+.2f}%"
    )
    assert load.admitted <= math.floor(theoretical) + 1, f"{label}: more admitted than possible"
    assert abs(error) <= TOLERANCE * 100
    return error


async def backends(session: aiohttp.ClientSession, proc: ServeProcess) -> dict[str, float]:
    """Decisions by backend and Redis errors, from the gateway's admin /metrics."""
    async with session.get(f"{proc.admin_url}/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "modgate_ratelimit_decisions_total":
                out[s.labels["backend"]] = out.get(s.labels["backend"], 0) + s.value
            elif s.name == "modgate_redis_errors_total":
                out["errors"] = out.get("errors", 0) + s.value
    return out


async def test_gateways_sharing_redis_admit_what_one_would(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(routes)
    (tmp_path / "gw.yaml").write_text("{}\n")
    # The default budget: no call may fall back to a local bucket because three gateways and
    # the client share a small CI machine. It is checked below: every decision came from Redis.
    env = {"MODGATE_RATE_LIMIT_ENABLED": "true", "MODGATE_REDIS_URL": private_redis.url}
    args = ("--config", str(tmp_path / "gw.yaml"), "--routes-file", str(routes))
    gateways: list[ServeProcess] = []
    taken = {private_redis.port}
    while len(gateways) < 3:
        # free_port() may hand the same port out twice in a row (seen ~0.2% of the time for
        # 7 ports); a gateway whose admin port clashes with another's would look ready.
        gateway = ServeProcess(*args, env=env, cwd=str(tmp_path))
        ports = {gateway.port, gateway.admin_port}
        if len(ports) == 2 and not ports & taken:
            gateways.append(gateway)
            taken |= ports
    try:
        await asyncio.gather(*(g.start() for g in gateways))
        async with aiohttp.ClientSession() as session:
            for g in gateways:  # each answers on its own public port
                async with session.get(f"{g.url}/api/modules/{SHARED}/ready") as response:
                    assert response.status == 404, await g.output()
        shared = await hammer(
            [f"{g.url}/api/modules/{SHARED}/hello" for g in gateways], LOAD_SECONDS
        )
        single = await hammer([f"{gateways[0].url}/api/modules/{SINGLE}/hello"], LOAD_SECONDS)
        async with aiohttp.ClientSession() as session:
            seen = [await backends(session, g) for g in gateways]
    finally:
        await asyncio.gather(*(g.stop() for g in gateways))

    for i, counts in enumerate(seen):
        assert counts.get("redis", 0) > 0, f"gateway {i} never asked Redis: {counts}"
        elsewhere = {k: v for k, v in counts.items() if k != "redis" and v}
        assert not elsewhere, f"gateway {i} did not decide everything in Redis: {counts}"
    three = judge("3 gateways", shared)
    one = judge("1 gateway ", single)
    print(
        f"N gateways admit the same number as one would: 3 gateways {shared.admitted} "
        f"({three:+.2f}%), 1 gateway {single.admitted} ({one:+.2f}%)"
    )
