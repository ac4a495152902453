"""The mirror: the `local` fallback continues where Redis left off, a timed-out call spends
its token, and coming back to Redis mints nothing.

Strategy: first the mirror alone (`LocalLimiter` with an injected clock: exact, no Redis),
then the facade on a private redis-server, built from settings as the gateway builds it, made
unreachable by a fault proxy (Redis keeps its state), stalled (SIGSTOP) or restarted (Redis
loses it). Small limits keep the refill (limit / 60 s) well under a token for the time a test
takes, so counts are exact.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from proxy.ratelimit.decision import DAY_MS, LIMITED_QUOTA, LIMITED_RATE
from proxy.ratelimit.limiter import RateLimiter
from proxy.ratelimit.local_limiter import LocalLimiter
from tests.ratelimit.conftest import COOLDOWN, WINDOW, Build, ManualClock
from tests.support.fault_proxy import FaultProxy
from tests.support.redis_server import RedisServer

T0 = 1_763_900_000_000 - (1_763_900_000_000 % DAY_MS) + 12 * 3_600_000  # noon UTC, some day


class MsClock:
    """The mirror's clock (ms), moved only by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


# -- the mirror alone ----------------------------------------------------------------------


def test_the_fallback_continues_from_the_last_reply() -> None:
    clock = MsClock()
    mirror = LocalLimiter(capacity=10, clock=clock)
    mirror.record("b", 60, 0, 10.0, 0)  # Redis said: 10 tokens left
    got = [mirror.fallback("b", 60, 0) for _ in range(12)]
    assert [d.allowed for d in got] == [True] * 10 + [False] * 2
    assert (got[0].limit, got[0].remaining, got[9].remaining) == (60, 9, 0)
    assert (got[10].limited_by, got[10].retry_after_ms) == (LIMITED_RATE, 1000)
    state = mirror.state("b")
    assert state is not None and state.debt == 10  # owed to Redis


def test_each_process_takes_its_share_of_what_is_left() -> None:
    clock = MsClock()
    mirror = LocalLimiter(capacity=10, replicas=4, clock=clock)
    mirror.record("b", 120, 0, 40.0, 0)  # 40 of 120 left: this process's quarter is 10
    got = [mirror.fallback("b", 120, 0) for _ in range(12)]
    assert sum(d.allowed for d in got) == 10 and got[0].limit == 30 and got[0].remaining == 9
    clock.now += 2_000  # 4 tokens of the whole at 2/s: one for each of the 4 processes
    assert mirror.fallback("b", 120, 0).allowed
    assert not mirror.fallback("b", 120, 0).allowed


def test_the_days_count_carries_over() -> None:
    mirror = LocalLimiter(capacity=10, clock=MsClock())
    mirror.record("b", 60, 10, 50.0, 8)  # 8 of today's 10 already counted in Redis
    got = [mirror.fallback("b", 60, 10) for _ in range(3)]
    assert [d.allowed for d in got] == [True, True, False]
    assert (got[2].limited_by, got[2].limit) == (LIMITED_QUOTA, 10)


def test_the_next_call_carries_the_debt_and_a_failed_one_gives_it_back() -> None:
    clock = MsClock()
    mirror = LocalLimiter(capacity=10, clock=clock)
    assert mirror.carry("b", 60) == (0, "", 0)  # never seen: nothing to carry
    mirror.record("b", 60, 10, 10.0, 4)
    for _ in range(3):
        mirror.fallback("b", 60, 10)
    clock.now += 2_000  # 2 tokens refilled
    assert mirror.carry("b", 60) == (3, "9.0", 7)  # the debt, tokens now, today's count
    assert mirror.carry("b", 60)[0] == 0  # taken once
    mirror.restore("b", 3)  # that call failed: owed again
    assert mirror.carry("b", 60)[0] == 3


def test_a_reply_that_does_not_know_of_local_admissions_keeps_them() -> None:
    mirror = LocalLimiter(capacity=10, clock=MsClock())
    mirror.record("b", 60, 0, 10.0, 0)
    mirror.fallback("b", 60, 0)
    mirror.fallback("b", 60, 0)
    mirror.record("b", 60, 0, 10.0, 0)  # e.g. a late reply from before them
    state = mirror.state("b")
    assert state is not None and (state.tokens, state.debt) == (8.0, 2)


def test_an_evicted_bucket_is_forgotten() -> None:
    mirror = LocalLimiter(capacity=2, clock=MsClock())
    for bucket in ("a", "b", "c"):
        mirror.record(bucket, 60, 0, 0.0, 0)
    assert mirror.state("a") is None and len(mirror) == 2
    assert mirror.fallback("a", 60, 0).remaining == 59  # back full: the documented bound


# -- through Redis ---------------------------------------------------------------------------


def bucket_name() -> str:
    return f"m-{uuid.uuid4().hex}:ip:127.0.0.1"


@pytest.fixture
async def proxy(private_redis: RedisServer) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the private server: unreachable while Redis keeps its state."""
    fault = await FaultProxy("127.0.0.1", private_redis.port).start()
    yield fault
    await fault.close()


async def admitted(limiter: RateLimiter, bucket: str, per_minute: int, calls: int) -> int:
    count = 0
    for _ in range(calls):
        decision = await limiter.hit(bucket, per_minute, 0)
        count += decision is not None and decision.allowed
    return count


async def open_circuit(limiter: RateLimiter, clock: ManualClock, bucket: str) -> None:
    """Failing calls (decided locally, counted) until the circuit opens; none admitted."""
    while not limiter.breaker.open:
        clock.advance(WINDOW / 2)
        decision = await limiter.hit(bucket + "-probe", 30, 0)
        assert decision is not None


@pytest.mark.parametrize(("replicas", "expected"), [(1, 20), (2, 10)])
async def test_fallback_continues_where_redis_left_off(
    build: Build, proxy: FaultProxy, replicas: int, expected: int
) -> None:
    clock = ManualClock()
    limiter = await build(
        proxy.url_for("redis://127.0.0.1:1/0"), clock, rate_limit_replicas=replicas
    )
    bucket = bucket_name()
    assert await admitted(limiter, bucket, 30, 10) == 10  # by Redis: 20 of 30 left
    proxy.set_mode("refuse")
    await open_circuit(limiter, clock, bucket)
    # This process's share of the 20 Redis left, not a fresh bucket of 30 (or 15).
    assert await admitted(limiter, bucket, 30, 40) == expected


@pytest.mark.parametrize(("replicas", "after"), [(1, (False, 0)), (2, (True, 9))])
async def test_returning_to_redis_does_not_mint(
    build: Build, proxy: FaultProxy, replicas: int, after: tuple[bool, int]
) -> None:
    clock = ManualClock()
    limiter = await build(
        proxy.url_for("redis://127.0.0.1:1/0"), clock, rate_limit_replicas=replicas
    )
    assert limiter.redis is not None
    bucket = bucket_name()
    assert await admitted(limiter, bucket, 30, 10) == 10
    proxy.set_mode("refuse")
    await open_circuit(limiter, clock, bucket)
    spent = await admitted(limiter, bucket, 30, 40)  # 20 (all), or 10 (half of what is left)

    proxy.set_mode("pass")  # Redis kept its bucket: 20 left, it saw none of the local ones
    await asyncio.wait_for(_connected(limiter), 10)
    clock.advance(COOLDOWN)
    probe = await limiter.hit(bucket, 30, 0)
    assert not limiter.breaker.open
    # Charged for what the fallback admitted: 20 - 20 = 0, or 20 - 10 = 10 (the other
    # replicas' half, still theirs) less this call.
    assert probe is not None and (probe.allowed, probe.remaining) == after
    assert spent + 10 + int(after[0]) <= 30  # never more than the bucket held


async def test_a_timed_out_call_spends_its_token(build: Build, private_redis: RedisServer) -> None:
    clock = ManualClock()
    limiter = await build(private_redis.url, clock)
    assert limiter.redis is not None and limiter.redis.mirror is not None
    mirror = limiter.redis.mirror
    bucket = bucket_name()
    assert await admitted(limiter, bucket, 6, 2) == 2  # by Redis: 4 of 6 left

    private_redis.stop()
    try:
        late = await limiter.hit(bucket, 6, 0)  # past the budget: decided from the mirror
    finally:
        private_redis.cont()
    assert late is not None and (late.allowed, late.remaining) == (True, 3)
    assert not limiter.breaker.open  # one slow call opens nothing

    # Redis ran the stalled call when it woke (4 -> 3); its reply, read late, still reaches
    # the mirror, which keeps the local admission on top (3 - 1 = 2).
    async def late_reply_read() -> None:
        while (state := mirror.state(bucket)) is None or state.tokens > 2.5:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(late_reply_read(), 5)
    # Counted twice (conservative): by Redis, and as the local admission charged now.
    nxt = await limiter.hit(bucket, 6, 0)
    assert nxt is not None and (nxt.allowed, nxt.remaining) == (True, 1)


async def test_a_restarted_redis_keeps_the_days_count(
    build: Build, private_redis: RedisServer
) -> None:
    limiter = await build(private_redis.url, ManualClock())
    assert limiter.redis is not None
    bucket = bucket_name()
    results = [await limiter.hit(bucket, 600, 5) for _ in range(3)]  # 3 of today's 5
    private_redis.restart()  # empty: no bucket, no count
    await asyncio.wait_for(_connected(limiter), 10)
    for _ in range(10):
        results.append(await limiter.hit(bucket, 600, 5))
    assert sum(d is not None and d.allowed for d in results) == 5
    last = results[-1]
    assert last is not None and (last.limited_by, last.limit) == (LIMITED_QUOTA, 5)


async def _connected(limiter: RateLimiter) -> None:
    """Until the limiter's connections are all open again (reopened in the background)."""
    redis = limiter.redis
    assert redis is not None
    while redis.idle < redis.connections:
        await asyncio.sleep(0.01)
