"""One suite, two implementations: the Lua script on real Redis and the in-process buckets
must make the same decisions. Time is injected (the script takes a test-only `now`). The Redis
limiter runs with its default budget, as in production."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest
import redis.asyncio as redis
from redis.crc import key_slot

from proxy.ratelimit.decision import ALLOWED, DAY_MS, LIMITED_QUOTA, LIMITED_RATE, Decision
from proxy.ratelimit.local_limiter import LocalLimiter
from proxy.ratelimit.redis_limiter import DEFAULT_TIMEOUT, RedisLimiter, bucket_keys
from proxy.settings import DEFAULTS
from tests.conftest import REDIS_URL
from tests.support import run_prefix
from tests.support.redis_server import RedisServer

T0 = 1_763_900_000_000 - (1_763_900_000_000 % DAY_MS) + 12 * 3_600_000  # noon UTC, some day


class Limiter(Protocol):
    async def hit(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision: ...


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    client = redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (redis.ConnectionError, OSError) as exc:
        pytest.fail(f"Redis is required and not reachable at {REDIS_URL}: {exc}", pytrace=False)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_limiter(redis_client: Any) -> AsyncIterator[RedisLimiter]:
    """The Redis limiter with the default budget, its connections opened as the gateway does."""
    limiter = RedisLimiter(redis_client)
    assert await limiter.start()
    yield limiter
    await limiter.close()


@pytest.fixture(params=["local", "redis"])
def limiter(request: pytest.FixtureRequest) -> Limiter:
    if request.param == "local":
        return LocalLimiter(capacity=1000)
    redis_limiter: RedisLimiter = request.getfixturevalue("redis_limiter")
    return redis_limiter


def test_the_limiter_default_budget_is_the_settings_default() -> None:
    assert DEFAULT_TIMEOUT == DEFAULTS["redis_timeout_seconds"]


@pytest.fixture
def bucket() -> str:
    return run_prefix.bucket()  # this run's: swept from the shared Redis at the end


async def test_burst_then_limited(limiter: Limiter, bucket: str) -> None:
    for i in range(60):
        d = await limiter.hit(bucket, 60, 0, T0)
        assert (d.allowed, d.remaining) == (True, 59 - i)
    d = await limiter.hit(bucket, 60, 0, T0)
    assert (d.allowed, d.limited_by, d.remaining) == (False, LIMITED_RATE, 0)
    assert d.retry_after_ms == 1000  # 60/min: one token a second
    assert d.reset_ms == 60_000  # the bucket is full again a minute from now
    assert d.headers() == {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "60",
        "Retry-After": "1",
    }


async def test_refill_arithmetic(limiter: Limiter, bucket: str) -> None:
    for _ in range(120):
        await limiter.hit(bucket, 120, 0, T0)  # empty: refill is 2 tokens a second
    d = await limiter.hit(bucket, 120, 0, T0 + 250)  # half a token
    assert (d.allowed, d.retry_after_ms) == (False, 250)
    d = await limiter.hit(bucket, 120, 0, T0 + 500)  # one token
    assert (d.allowed, d.remaining) == (True, 0)
    d = await limiter.hit(bucket, 120, 0, T0 + 500 + 5_000)  # ten tokens
    assert (d.allowed, d.remaining) == (True, 9)
    assert d.reset_ms == 55_500  # 111 tokens missing at 2/s
    d = await limiter.hit(bucket, 120, 0, T0 + 3_600_000)  # an hour: full, never more
    assert d.remaining == 119


async def test_clock_going_backwards_mints_nothing(limiter: Limiter, bucket: str) -> None:
    for _ in range(10):
        await limiter.hit(bucket, 10, 0, T0)
    d = await limiter.hit(bucket, 10, 0, T0 - 30_000)
    assert not d.allowed


async def test_buckets_are_independent(limiter: Limiter, bucket: str) -> None:
    for _ in range(5):
        await limiter.hit(bucket, 5, 0, T0)
    assert not (await limiter.hit(bucket, 5, 0, T0)).allowed
    assert (await limiter.hit(bucket + "-other", 5, 0, T0)).allowed


async def test_daily_quota_and_its_reset_at_utc_midnight(limiter: Limiter, bucket: str) -> None:
    for _ in range(3):
        assert (await limiter.hit(bucket, 60, 3, T0)).allowed
    d = await limiter.hit(bucket, 60, 3, T0 + 1000)
    assert (d.allowed, d.limited_by, d.limit, d.remaining) == (False, LIMITED_QUOTA, 3, 0)
    until_midnight = DAY_MS - ((T0 + 1000) % DAY_MS)
    assert d.reset_ms == d.retry_after_ms == until_midnight
    assert d.headers()["Retry-After"] == str(-(-until_midnight // 1000))
    # A refused request spent no minute token: after midnight the bucket has 60 - 3 + refill.
    midnight = T0 + until_midnight + 1000
    d = await limiter.hit(bucket, 60, 3, midnight)
    assert (d.allowed, d.limited_by) == (True, ALLOWED)


async def test_a_changed_limit_changes_refill_not_tokens(limiter: Limiter, bucket: str) -> None:
    # The facade picks the limit per request (route over key over default); when it changes,
    # the bucket keeps its tokens and refills at the new rate: a change mints nothing.
    for _ in range(5):
        await limiter.hit(bucket, 5, 0, T0)
    assert (await limiter.hit(bucket, 5, 0, T0)).retry_after_ms == 12_000
    d = await limiter.hit(bucket, 10, 0, T0)
    assert (d.allowed, d.limit, d.retry_after_ms) == (False, 10, 6_000)


async def test_redis_keys_share_a_cluster_slot_and_expire(
    redis_client: Any, redis_limiter: RedisLimiter, bucket: str
) -> None:
    minute, day = bucket_keys(bucket)
    assert "{" in minute and "}" in minute
    assert key_slot(minute.encode()) == key_slot(day.encode())
    await redis_limiter.hit(bucket, 60, 100)
    assert 0 < await redis_client.pttl(minute) <= 1000 + 1000  # one token missing: 1 s + margin
    assert 0 < await redis_client.pttl(day) <= DAY_MS + 60_000
    assert await redis_client.hget(day, "n") == b"1"


async def test_script_survives_script_flush(private_redis: RedisServer, bucket: str) -> None:
    # A private server: SCRIPT FLUSH empties every database's scripts, not only this test's.
    client = redis.from_url(private_redis.url)
    limiter = RedisLimiter(client)
    try:
        assert await limiter.start()
        await limiter.hit(bucket, 10, 0)
        await client.script_flush()
        d = await limiter.hit(bucket, 10, 0)  # NOSCRIPT -> EVAL (runs and caches it), state kept
        assert d.allowed and d.remaining == 8
        assert await client.script_exists(limiter.sha) == [True]
    finally:
        await limiter.close()
        await client.aclose()
