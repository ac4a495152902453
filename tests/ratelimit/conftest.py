"""Fixtures for the rate-limit tests: a private `redis-server` for the failure cases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, RedisServerMissing


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
