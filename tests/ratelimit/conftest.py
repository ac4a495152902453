"""Fixtures for the rate-limit tests: a private `redis-server` for the failure cases, and
limiters built from settings as the gateway builds them, with the breaker's clock injected."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.ratelimit.limiter import RateLimiter, create_redis_client
from proxy.server.gateway import rate_limiter
from proxy.settings import DEFAULTS, load_settings
from tests.support.redis_server import RedisServer, RedisServerMissing

BUDGET = float(str(DEFAULTS["redis_timeout_seconds"]))  # the default: production's
THRESHOLD = 3
WINDOW = 0.5  # seconds of the injected clock
COOLDOWN = 1.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running throwaway redis-server of this test's own, to kill, hang and restart.

    Never skipped: without redis-server the test fails saying how to get it (CI sets CI=true
    and relies on failures, not skips).
    """
    try:
        server = RedisServer(tmp_path)
    except RedisServerMissing as exc:
        missing = str(exc)
    else:
        with server:
            yield server
        return
    pytest.fail(missing, pytrace=False)


class ManualClock:
    """The breaker's clock, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Build = Callable[..., Awaitable[RateLimiter]]


@pytest.fixture
async def build(tmp_path: Path) -> AsyncIterator[Build]:
    """Builds and starts limiters from settings as the gateway does; closes them afterwards."""
    made: list[tuple[RateLimiter, Any]] = []
    config = tmp_path / "gateway.yaml"
    config.write_text("{}\n")

    async def make(url: str, clock: Callable[[], float], **overrides: object) -> RateLimiter:
        settings = load_settings(
            str(config),
            environ={},
            overrides={
                "redis_url": url,
                "redis_circuit_failures": THRESHOLD,
                "redis_circuit_window_seconds": WINDOW,
                "redis_circuit_cooldown_seconds": COOLDOWN,
                **overrides,
            },
        )
        assert settings.redis_timeout_seconds == BUDGET
        assert settings.redis_url is not None
        client = create_redis_client(settings.redis_url, timeout=settings.redis_timeout_seconds)
        # As the gateway builds it, with the breaker's clock injected.
        limiter = rate_limiter(settings, client, clock=clock)
        made.append((limiter, client))
        await limiter.start()
        return limiter

    yield make
    for limiter, client in made:
        await limiter.close()
        await client.aclose()
