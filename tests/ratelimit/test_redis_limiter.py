"""The Redis limiter's pipelined calls: each reply reaches the caller that sent the command,
through concurrency, a stall and a password-protected, non-default database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from proxy.ratelimit.redis_limiter import RedisLimiter, bucket_keys
from tests.ratelimit.test_buckets import T0
from tests.support.redis_server import RedisServer


@pytest.fixture
async def clients() -> AsyncIterator[list[Any]]:
    made: list[Any] = []
    yield made
    for client in made:
        await client.aclose()


def _limiter(clients: list[Any], url: str, timeout: float = 0.5) -> RedisLimiter:
    client = redis.from_url(url)
    clients.append(client)
    return RedisLimiter(client, timeout=timeout)


async def test_concurrent_callers_each_get_their_own_reply(
    private_redis: RedisServer, clients: list[Any]
) -> None:
    # 40 buckets x 25 calls, all in flight together: if one reply went to the wrong caller,
    # some bucket would not see exactly remaining 24, 23, ..., 0 across its own calls.
    limiter = _limiter(clients, private_redis.url)
    buckets = [f"pipe-{uuid.uuid4().hex}" for _ in range(40)]
    calls = [(b, limiter.hit(b, 25, 0, T0)) for _ in range(25) for b in buckets]
    decisions = await asyncio.gather(*(call for _, call in calls))
    seen: dict[str, list[int]] = {b: [] for b in buckets}
    for (bucket, _), decision in zip(calls, decisions, strict=True):
        assert decision.allowed
        seen[bucket].append(decision.remaining)
    assert all(sorted(r) == list(range(25)) for r in seen.values())


async def test_a_stalled_redis_times_out_then_replies_stay_in_step(
    private_redis: RedisServer, clients: list[Any]
) -> None:
    limiter = _limiter(clients, private_redis.url, timeout=0.05)
    bucket = f"pipe-{uuid.uuid4().hex}"
    assert (await limiter.hit(bucket, 10, 0, T0)).remaining == 9
    private_redis.stop()  # SIGSTOP: the connection stays open, nothing answers
    try:
        results = await asyncio.gather(
            *(limiter.hit(bucket, 10, 0, T0) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, TimeoutError) for r in results)
    finally:
        private_redis.cont()
    # The stalled calls were still applied by Redis when it woke up (a documented bound: a
    # timed-out call may count); what matters is that every new caller gets its own reply.
    await asyncio.sleep(0.05)
    after = [await limiter.hit(bucket, 10, 0, T0) for _ in range(3)]
    remaining = [d.remaining for d in after]
    assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == 3
    fresh = f"pipe-{uuid.uuid4().hex}"
    assert [(await limiter.hit(fresh, 10, 0, T0)).remaining for _ in range(3)] == [9, 8, 7]


async def test_password_and_database_from_the_url(
    private_redis: RedisServer, clients: list[Any]
) -> None:
    admin = redis.from_url(private_redis.url)
    clients.append(admin)
    await admin.config_set("requirepass", "s3cret")
    base = private_redis.url.rsplit("/", 1)[0].replace("redis://", "redis://:s3cret@")
    limiter = _limiter(clients, f"{base}/3")
    bucket = f"pipe-{uuid.uuid4().hex}"
    assert (await limiter.hit(bucket, 10, 0, T0)).remaining == 9
    db3 = redis.from_url(f"{base}/3")
    db0 = redis.from_url(f"{base}/0")
    clients += [db3, db0]
    minute_key = bucket_keys(bucket)[0]
    assert await db3.exists(minute_key) == 1 and await db0.exists(minute_key) == 0

    wrong = _limiter(clients, f"{base.replace('s3cret', 'wrong')}/3")
    with pytest.raises(RedisError):
        await wrong.hit(bucket, 10, 0, T0)
