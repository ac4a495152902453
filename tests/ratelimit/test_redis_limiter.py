"""The Redis limiter's pipelined calls on its own connections: each reply reaches the caller
that sent the command, through concurrency, a stall and a password-protected, non-default
database; connections are opened ahead of calls, and reopened in the background."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from proxy.ratelimit.redis_limiter import DEFAULT_TIMEOUT, NotConnected, RedisLimiter, bucket_keys
from tests.ratelimit.test_buckets import T0
from tests.support.fault_proxy import FaultProxy
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer


@pytest.fixture
async def clients() -> AsyncIterator[list[Any]]:
    """Clients and limiters made by the test, closed after it."""
    made: list[Any] = []
    yield made
    for thing in reversed(made):
        await (thing.close() if isinstance(thing, RedisLimiter) else thing.aclose())


def _limiter(clients: list[Any], url: str, timeout: float = DEFAULT_TIMEOUT) -> RedisLimiter:
    client = redis.from_url(url)
    limiter = RedisLimiter(client, timeout=timeout)
    clients += [client, limiter]
    return limiter


async def _started(clients: list[Any], url: str, timeout: float = DEFAULT_TIMEOUT) -> RedisLimiter:
    limiter = _limiter(clients, url, timeout)
    assert await limiter.start()
    return limiter


async def test_concurrent_callers_each_get_their_own_reply(
    private_redis: RedisServer, clients: list[Any]
) -> None:
    # 40 buckets x 25 calls, all in flight together: if one reply went to the wrong caller,
    # some bucket would not see exactly remaining 24, 23, ..., 0 across its own calls.
    limiter = await _started(clients, private_redis.url)
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
    limiter = await _started(clients, private_redis.url, timeout=0.05)  # a test of the budget
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
    # The stalled calls were still applied by Redis when it woke up (a timed-out call is
    # counted as spent); their replies are read, so the connections stay in step and open.
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
    limiter = await _started(clients, f"{base}/3")
    bucket = f"pipe-{uuid.uuid4().hex}"
    assert (await limiter.hit(bucket, 10, 0, T0)).remaining == 9
    db3 = redis.from_url(f"{base}/3")
    db0 = redis.from_url(f"{base}/0")
    clients += [db3, db0]
    minute_key = bucket_keys(bucket)[0]
    assert await db3.exists(minute_key) == 1 and await db0.exists(minute_key) == 0

    wrong = _limiter(clients, f"{base.replace('s3cret', 'wrong')}/3")
    assert not await wrong.start()  # refused: nothing opened, retried in the background
    with pytest.raises(NotConnected):  # at once: a call never waits on a connection
        await wrong.hit(bucket, 10, 0, T0)


async def test_a_call_never_opens_a_connection(
    private_redis: RedisServer, clients: list[Any]
) -> None:
    limiter = _limiter(clients, private_redis.url)  # not started: nothing open yet
    bucket = f"pipe-{uuid.uuid4().hex}"
    started = time.perf_counter()
    with pytest.raises(NotConnected):
        await limiter.hit(bucket, 10, 0, T0)
    assert time.perf_counter() - started < DEFAULT_TIMEOUT / 10  # at once, no budget spent
    # ...and the connections are opened in the background meanwhile.
    await eventually(lambda: limiter.idle == limiter.connections, timeout=5)
    assert (await limiter.hit(bucket, 10, 0, T0)).remaining == 9


async def test_a_reopened_connection_has_the_script_before_its_first_call(
    private_redis: RedisServer, clients: list[Any]
) -> None:
    limiter = await _started(clients, private_redis.url)
    bucket = f"pipe-{uuid.uuid4().hex}"
    assert (await limiter.hit(bucket, 10, 0, T0)).remaining == 9
    private_redis.restart()  # empty: no keys, no scripts; the open connections are dead
    for _ in range(500):  # each dead connection fails one call, at once, until reopened
        with contextlib.suppress(RedisError):
            if (await limiter.hit(bucket, 10, 0, T0)).allowed:
                break
        await asyncio.sleep(0.01)
    await eventually(lambda: limiter.idle == limiter.connections, timeout=5)
    admin = redis.from_url(private_redis.url)
    clients.append(admin)
    stats = await admin.info("commandstats")
    errors = await admin.info("errorstats")
    assert "cmdstat_eval" not in stats and "errorstat_NOSCRIPT" not in errors  # loaded first
    assert stats["cmdstat_script|load"]["calls"] == limiter.connections


async def test_reconnecting_costs_no_call_its_budget(
    private_redis: RedisServer, clients: list[Any]
) -> None:
    # A partition (connections hang, new ones never complete) while the limiter reconnects:
    # calls fail at once instead of waiting on a connection being set up.
    proxy = await FaultProxy("127.0.0.1", private_redis.port).start()
    try:
        limiter = await _started(clients, proxy.url_for(private_redis.url))
        bucket = f"pipe-{uuid.uuid4().hex}"
        assert (await limiter.hit(bucket, 10, 0, T0)).remaining == 9
        proxy.drop_all()  # connections reset...
        proxy.set_mode("blackhole")  # ...and reconnecting hangs
        costs, failures = [], []
        for _ in range(50):
            started = time.perf_counter()
            try:
                await limiter.hit(bucket, 10, 0, T0)
            except (RedisError, TimeoutError) as exc:
                failures.append(exc)
            costs.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
        assert len(failures) == 50 and not any(isinstance(f, TimeoutError) for f in failures)
        assert max(costs) < DEFAULT_TIMEOUT / 2, f"slowest: {max(costs) * 1000:.1f} ms"
        proxy.set_mode("pass")
        await eventually(lambda: limiter.idle == limiter.connections, timeout=10)
        assert (await limiter.hit(bucket, 10, 0, T0)).remaining == 8
    finally:
        await proxy.close()


async def test_a_reply_that_waited_for_a_busy_host_is_not_a_timeout(
    private_redis: RedisServer, clients: list[Any]
) -> None:
    # This process does not run for 1.5 budgets (as when both cores are busy): Redis answers
    # meanwhile, and the budget's timer, when it finally runs, is that late. The call gets its
    # reply instead of a TimeoutError: the budget measures Redis, not this host.
    limiter = await _started(clients, private_redis.url, timeout=0.05)
    bucket = f"pipe-{uuid.uuid4().hex}"
    call = asyncio.ensure_future(limiter.hit(bucket, 10, 0, T0))
    for _ in range(3):  # queued, flushed, written
        await asyncio.sleep(0)
    time.sleep(0.075)  # blocking on purpose: the event loop does not run
    assert (await call).remaining == 9
    # A Redis that does not answer still times out, within the budget and one more.
    private_redis.stop()
    try:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await limiter.hit(bucket, 10, 0, T0)
        assert time.perf_counter() - started < 0.05 * 2 + 0.05
    finally:
        private_redis.cont()
