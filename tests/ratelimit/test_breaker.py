"""The circuit breaker alone, on an injected clock: it opens on a Redis that keeps failing over
a window, never on a burst of failures, and probes once per cooldown."""

from __future__ import annotations

from proxy.ratelimit.breaker import CircuitBreaker
from tests.ratelimit.conftest import ManualClock


def breaker(clock: ManualClock) -> CircuitBreaker:
    return CircuitBreaker(failures=3, window=0.5, cooldown=1.0, policy="local", clock=clock)


def test_a_burst_of_failures_opens_nothing() -> None:
    clock = ManualClock()
    b = breaker(clock)
    for _ in range(500):  # one slow reply failing every call in flight at once
        b.failure("timeout")
    assert not b.open
    clock.advance(0.5)
    b.failure("timeout")  # still failing half a second later: really failing
    assert b.open
    b.success()  # closed again (the fallback gauge is process-wide)


def test_failures_must_be_in_a_row_and_enough() -> None:
    clock = ManualClock()
    b = breaker(clock)
    b.failure("timeout")
    clock.advance(0.4)
    b.success()  # a success in between starts over
    b.failure("timeout")
    clock.advance(0.6)
    b.failure("timeout")  # two failures over the window: not enough
    assert not b.open
    b.failure("timeout")
    assert b.open
    b.success()


def test_open_probes_once_per_cooldown_and_closes_on_success() -> None:
    clock = ManualClock()
    b = breaker(clock)
    b.trip("cannot connect")  # unreachable: open at once
    assert b.open and not b.allow()
    clock.advance(1.0)
    assert b.allow() and not b.allow()  # one probe at a time
    b.failure("error")
    assert not b.allow()
    clock.advance(1.0)
    assert b.allow()
    b.success()
    assert not b.open and b.allow()
