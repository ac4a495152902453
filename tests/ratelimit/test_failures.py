"""Redis failures, on a private redis-server the tests kill, hang and restart.

Strategy: the real `RateLimiter` facade, assembled by the gateway's `rate_limiter` from
settings (the default budget), with the breaker's clock injected: while the test holds the
clock, a burst of failures stays inside the window and an open circuit sends no probe, so
"opens only on failures spanning the window" and "no Redis call while open" are exact; the
test moves the clock to open the circuit and past the cooldown to recover. Metrics are
process-global, so tests compare before/after.
The last tests run `modgate serve` as a subprocess (real clock, a short cooldown) and hold it
to the issue's promise: no 5xx while Redis dies and comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from proxy.errors import ServiceUnavailable
from proxy.ratelimit.decision import Decision
from proxy.ratelimit.limiter import RateLimiter
from tests.ratelimit.conftest import BUDGET, COOLDOWN, THRESHOLD, WINDOW, Build, ManualClock
from tests.support.polling import eventually
from tests.support.process import ServeProcess
from tests.support.redis_server import RedisServer

ERRORS = "modgate_redis_errors_total"
DECISIONS = "modgate_ratelimit_decisions_total"
FALLBACK = "modgate_ratelimit_fallback_active"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def redis_errors() -> float:
    return sample(ERRORS, kind="timeout") + sample(ERRORS, kind="error")


def decisions(backend: str) -> float:
    return sum(sample(DECISIONS, decision=d, backend=backend) for d in ("allowed", "limited"))


def bucket_name() -> str:
    return f"t-{uuid.uuid4().hex}:ip:127.0.0.1"


async def until_open(limiter: RateLimiter, clock: ManualClock, timeout: float = 5.0) -> None:
    """Until the circuit opens, moving the breaker's clock so that failures span the window."""

    def opened() -> bool:
        clock.advance(WINDOW / 50)
        return limiter.breaker.open

    await eventually(opened, timeout=timeout, interval=0.001, what="the circuit opens")


class Traffic:
    """A loop of `hit()` calls in a task; any exception escaping `hit()` fails `stop()`."""

    def __init__(self, limiter: RateLimiter, bucket: str, per_minute: int) -> None:
        self.results: list[Decision | None] = []
        self._running = True
        self._task = asyncio.create_task(self._run(limiter, bucket, per_minute))

    async def _run(self, limiter: RateLimiter, bucket: str, per_minute: int) -> None:
        while self._running:
            self.results.append(await limiter.hit(bucket, per_minute, 0))
            await asyncio.sleep(0)

    async def stop(self) -> list[Decision | None]:
        self._running = False
        await self._task  # re-raises what escaped hit()
        return self.results


async def test_local_policy_kill_mid_traffic_falls_back_then_recovers(
    build: Build, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="modgate.ratelimit")
    clock = ManualClock()
    limiter = await build(
        private_redis.url, clock, redis_failure_policy="local", rate_limit_replicas=4
    )
    assert limiter.redis is not None
    per_minute = 120  # the local share is 120 // 4 = 30

    redis_before = decisions("redis")
    traffic = Traffic(limiter, bucket_name(), per_minute)
    await eventually(lambda: len(traffic.results) >= 20)
    assert decisions("redis") - redis_before >= 20 and not limiter.breaker.open

    private_redis.kill()
    await until_open(limiter, clock)
    seen = len(traffic.results)
    await eventually(lambda: len(traffic.results) >= seen + 50)  # traffic goes on, decided locally
    results = await traffic.stop()
    assert all(isinstance(d, Decision) for d in results)  # policy local always decides
    assert sample(FALLBACK) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "failure policy 'local' in force" in errors[0].getMessage()

    # Circuit open: 200 calls touch no Redis (no error counted), all decided by local buckets
    # holding each limit / replicas: a bucket Redis never saw admits exactly 120 // 4 = 30.
    errors_before, local_before = redis_errors(), decisions("local")
    fresh = bucket_name()
    emptying = time.monotonic()
    got = [await limiter.hit(fresh, per_minute, 0) for _ in range(200)]
    assert redis_errors() == errors_before
    assert decisions("local") - local_before == 200
    admitted = [d for d in got if d is not None and d.allowed]
    assert len(admitted) == 30 and all(d is not None and d.allowed for d in got[:30])
    assert {d.limit for d in got if d is not None} == {30}

    # Redis back, empty (no keys, no script): connections reopen in the background, the script
    # loaded with them. Nothing calls it until the cooldown has passed.
    private_redis.restart()
    await eventually(lambda: limiter.redis is not None and limiter.redis.connected, timeout=10)
    await limiter.hit(fresh, per_minute, 0)
    assert limiter.breaker.open and sample(FALLBACK) == 1
    clock.advance(COOLDOWN)
    redis_before = decisions("redis")
    probe = await limiter.hit(fresh, per_minute, 0)  # the probe
    # Real time passed since the bucket was emptied: at most this many tokens came back (a
    # loaded machine can take longer than the half second one token takes at 120/min).
    refilled = int((time.monotonic() - emptying) * per_minute / 60)
    assert not limiter.breaker.open and sample(FALLBACK) == 0
    assert decisions("redis") - redis_before == 1
    # The restarted Redis does not hand out a fresh bucket (119 left): it starts from this
    # process's mirror, which the fallback emptied (30 admissions of a 4th share each).
    assert probe is not None and probe.limit == 120 and probe.remaining <= refilled
    assert not probe.allowed or refilled >= 1, (probe, refilled)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Redis answers again" in r.getMessage() for r in warnings)


async def test_hung_redis_costs_at_most_the_budget_until_the_circuit_opens(
    build: Build, private_redis: RedisServer
) -> None:
    clock = ManualClock()
    limiter = await build(private_redis.url, clock, redis_failure_policy="local")
    bucket = bucket_name()
    for _ in range(3):
        await limiter.hit(bucket, 60, 0)

    private_redis.stop()
    timeouts_before = sample(ERRORS, kind="timeout")
    for i in range(THRESHOLD):
        if i:
            clock.advance(WINDOW / (THRESHOLD - 1))  # the failures span the window
        started = time.perf_counter()
        decision = await limiter.hit(bucket, 60, 0)
        cost = time.perf_counter() - started
        # Decided from the mirror past the budget: 57 tokens were left.
        assert decision is not None and decision.allowed
        assert decision.remaining == 60 - 3 - i - 1
        # At most the budget, twice that if this process was starved at its deadline.
        assert BUDGET * 0.9 <= cost < 2 * BUDGET + 0.05, f"a call cost {cost * 1000:.1f} ms"
    assert limiter.breaker.open and sample(FALLBACK) == 1
    assert sample(ERRORS, kind="timeout") - timeouts_before == THRESHOLD

    # Open: no call waits on the hung server, and no timeout is counted any more.
    costs = []
    for _ in range(200):
        started = time.perf_counter()
        await limiter.hit(bucket, 60, 0)
        costs.append(time.perf_counter() - started)
    assert max(costs) < BUDGET / 2, f"slowest call with the circuit open: {max(costs):.4f} s"
    assert sample(ERRORS, kind="timeout") - timeouts_before == THRESHOLD

    private_redis.cont()
    clock.advance(COOLDOWN)
    redis_before = decisions("redis")
    decision = await limiter.hit(bucket, 60, 0)
    assert not limiter.breaker.open and sample(FALLBACK) == 0
    assert decisions("redis") - redis_before == 1
    # Returning to Redis mints nothing: the fallback spent the 57 tokens the mirror held, and
    # Redis is charged for them (it also ran the 3 timed-out calls once it woke: counted twice,
    # conservative). Refill is 1/s: this test takes about a second.
    assert decision is not None and decision.remaining <= 1


async def test_one_slow_reply_does_not_open_the_circuit(
    build: Build, private_redis: RedisServer
) -> None:
    # The breaker's real clock: a stall of two budgets fails every call in flight at once,
    # many failures, all well inside the window.
    limiter = await build(private_redis.url, time.monotonic)
    bucket = bucket_name()
    await limiter.hit(bucket, 6000, 0)
    private_redis.stop()
    try:
        stalled = await asyncio.gather(*(limiter.hit(bucket, 6000, 0) for _ in range(50)))
    finally:
        private_redis.cont()
    assert all(d is not None and d.allowed for d in stalled)  # the mirror's tokens
    assert not limiter.breaker.open
    redis_before = decisions("redis")
    assert (await limiter.hit(bucket, 6000, 0)) is not None
    assert decisions("redis") - redis_before == 1


async def test_a_cancelled_probe_does_not_keep_the_circuit_open(
    build: Build, private_redis: RedisServer
) -> None:
    # The gateway runs with handler_cancellation=True: a client that goes away while its
    # request is the probe cancels the probe in the middle of its Redis call.
    clock = ManualClock()
    limiter = await build(private_redis.url, clock)
    bucket = bucket_name()
    await limiter.hit(bucket, 60, 0)
    private_redis.stop()
    while not limiter.breaker.open:
        clock.advance(WINDOW / 2)
        await limiter.hit(bucket, 60, 0)

    clock.advance(COOLDOWN)
    probe = asyncio.create_task(limiter.hit(bucket, 60, 0))
    await asyncio.sleep(BUDGET / 5)  # the probe is waiting on the hung server
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe

    private_redis.cont()
    clock.advance(10 * COOLDOWN)  # long past the cooldown: a new probe is due
    redis_before = decisions("redis")
    await limiter.hit(bucket, 60, 0)
    assert decisions("redis") - redis_before == 1, f"still falling back: {limiter.breaker!r}"
    assert not limiter.breaker.open


async def kill_and_open(
    limiter: RateLimiter, server: RedisServer, clock: ManualClock
) -> list[object]:
    """Kill the server, then call until the circuit opens; what each call returned."""
    bucket = bucket_name()
    first = await limiter.hit(bucket, 60, 0)
    assert first is not None and first.allowed  # Redis decided
    server.kill()
    outcomes: list[object] = []
    while not limiter.breaker.open:
        if outcomes:
            clock.advance(WINDOW / (THRESHOLD - 1))
        try:
            outcomes.append(await limiter.hit(bucket, 60, 0))
        except ServiceUnavailable as exc:
            outcomes.append(exc)
    for _ in range(10):  # and with the circuit open
        try:
            outcomes.append(await limiter.hit(bucket, 60, 0))
        except ServiceUnavailable as exc:
            outcomes.append(exc)
    return outcomes


async def test_open_policy_admits_without_headers_when_redis_is_dead(
    build: Build, private_redis: RedisServer
) -> None:
    clock = ManualClock()
    limiter = await build(private_redis.url, clock, redis_failure_policy="open")
    before = sample(DECISIONS, decision="allowed", backend="open")
    outcomes = await kill_and_open(limiter, private_redis, clock)
    assert len(outcomes) == THRESHOLD + 10
    assert outcomes == [None] * len(outcomes)  # admitted, no decision, so no headers
    assert sample(DECISIONS, decision="allowed", backend="open") - before == len(outcomes)


async def test_closed_policy_refuses_with_503_when_redis_is_dead(
    build: Build, private_redis: RedisServer
) -> None:
    clock = ManualClock()
    limiter = await build(private_redis.url, clock, redis_failure_policy="closed")
    outcomes = await kill_and_open(limiter, private_redis, clock)
    assert len(outcomes) == THRESHOLD + 10
    assert all(isinstance(o, ServiceUnavailable) and o.status == 503 for o in outcomes)


async def test_script_flush_mid_traffic_reloads_the_script_and_keeps_the_bucket(
    build: Build, private_redis: RedisServer
) -> None:
    limiter = await build(private_redis.url, ManualClock())
    assert limiter.redis is not None
    sha = limiter.redis.sha
    admin = redis.from_url(private_redis.url)
    try:
        bucket = bucket_name()
        redis_before, errors_before = decisions("redis"), redis_errors()
        remaining = []
        for i in range(40):
            if i in (10, 25):
                await admin.script_flush()
                assert await admin.script_exists(sha) == [False]
            decision = await limiter.hit(bucket, 60, 0)
            assert decision is not None and decision.allowed
            remaining.append(decision.remaining)
        assert await admin.script_exists(sha) == [True]  # EVAL after NOSCRIPT cached it
    finally:
        await admin.aclose()
    assert decisions("redis") - redis_before == 40
    assert redis_errors() == errors_before and not limiter.breaker.open
    # One bucket throughout (refill is 1/s: the 40 calls take far less than a second).
    assert remaining == list(range(59, 19, -1))


# -- through a running gateway ---------------------------------------------------------------

MODULE = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"


def write_routes(path: Path, module_id: str, per_minute: int) -> None:
    route = {
        "path": "/hello",
        "method": "GET",
        "handler_type": "static",
        "handler_code": '{"v": 1}',
        "requires_auth": False,
        "rate_limit_per_minute": per_minute,
    }
    module = {"id": module_id, "name": "limited", "routes": [route]}
    path.write_text(yaml.safe_dump({"modules": [module]}))


async def gateway_metrics(session: aiohttp.ClientSession, proc: ServeProcess) -> dict[str, float]:
    """The admin /metrics samples, keyed `name{label=value,...}` (labels sorted)."""
    async with session.get(f"{proc.admin_url}/metrics") as response:
        text = await response.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


async def poll_metric(
    session: aiohttp.ClientSession, proc: ServeProcess, key: str, value: float
) -> dict[str, float]:
    """Poll /metrics until `key` has `value`; the samples at that moment."""
    deadline = time.monotonic() + 10
    while (samples := await gateway_metrics(session, proc)).get(key) != value:
        assert time.monotonic() < deadline, f"{key} never became {value}"
        await asyncio.sleep(0.02)
    return samples


def redis_decided(samples: dict[str, float]) -> float:
    return sum(samples.get(f"{DECISIONS}{{backend=redis,decision={d}}}", 0) for d in _KINDS)


_KINDS = ("allowed", "limited")


async def test_gateway_survives_redis_killed_mid_traffic_and_recovers(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(routes, MODULE, 600)
    (tmp_path / "gw.yaml").write_text("{}\n")
    proc = ServeProcess(
        "--config", str(tmp_path / "gw.yaml"), "--routes-file", str(routes),
        env={
            "MODGATE_RATE_LIMIT_ENABLED": "true",
            "MODGATE_REDIS_URL": private_redis.url,
            "MODGATE_REDIS_FAILURE_POLICY": "local",
            "MODGATE_REDIS_CIRCUIT_COOLDOWN_SECONDS": "0.05",
        },
        cwd=str(tmp_path),
    )  # fmt: skip
    await proc.start()
    url = f"{proc.url}/api/modules/{MODULE}/hello"
    phase = "redis up"
    statuses: dict[str, Counter[int]] = {}
    running = True

    async def client(session: aiohttp.ClientSession) -> None:
        while running:
            async with session.get(url) as response:
                await response.read()
                statuses.setdefault(phase, Counter())[response.status] += 1

    async def phase_runs(
        name: str, until_done: Callable[[], Awaitable[dict[str, float]]]
    ) -> dict[str, float]:
        """Label traffic `name` until `until_done`, then 50 responses more; its samples."""
        nonlocal phase
        phase = name
        samples = await until_done()
        count = sum(statuses.get(name, Counter()).values())
        deadline = time.monotonic() + 10
        while sum(statuses.get(name, Counter()).values()) < count + 50:  # traffic goes on
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        return samples

    fallback = f"{FALLBACK}{{}}"
    try:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(client(session)) for _ in range(4)]
            try:
                await phase_runs("redis up", lambda: poll_metric(session, proc, fallback, 0))
                assert redis_decided(await gateway_metrics(session, proc)) > 0
                private_redis.kill()
                await phase_runs("redis dead", lambda: poll_metric(session, proc, fallback, 1))
                private_redis.restart()
                recovered = await phase_runs(
                    "redis back", lambda: poll_metric(session, proc, fallback, 0)
                )
            finally:
                running = False
                await asyncio.gather(*tasks)
            after = await gateway_metrics(session, proc)
    finally:
        await proc.stop()
    log = await proc.output()
    print(f"\nstatuses by phase: { {k: dict(v) for k, v in statuses.items()} }")
    for name in ("redis up", "redis dead", "redis back"):
        assert set(statuses[name]) <= {200, 429}, f"{name}: {statuses[name]}"
        assert statuses[name][200] > 0
    assert redis_decided(after) > redis_decided(recovered)  # Redis decides again
    assert after[f"{DECISIONS}{{backend=local,decision=allowed}}"] > 0
    assert "failure policy 'local' in force" in log
    assert "Redis answers again" in log
