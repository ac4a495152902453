"""A circuit breaker for the Redis limiter, with an injected clock.

closed: every call goes to Redis. It opens when Redis is really failing: `failures` failures in
a row that span at least `window` seconds, with no success in between. One slow reply, or one
stall that fails every call in flight at once, is not that: a burst of failures inside the
window opens nothing, so a busy host does not turn a healthy Redis into a fallback. It also
opens at once on `trip` (no connection to Redis could be opened at all).
open: no call goes to Redis (so a dead or slow Redis costs no per-request timeout) and the
failure policy decides. Every `cooldown` seconds one call is let through as a probe; its
success closes the circuit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from proxy.observability import metrics

log = logging.getLogger("modgate.ratelimit")


class CircuitBreaker:
    __slots__ = ("_clock", "_failures", "_first_failure", "_next_probe", "_probing", "cooldown",
                 "open", "policy", "threshold", "window")  # fmt: skip

    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        policy: str,
        window: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.window = window
        self.cooldown = cooldown
        self.policy = policy
        self._clock = clock
        self._failures = 0
        self._first_failure = 0.0
        self.open = False
        self._probing = False
        self._next_probe = 0.0

    def allow(self) -> bool:
        if not self.open:
            return True
        if self._probing or self._clock() < self._next_probe:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        if self.open:
            self.open = False
            metrics.RATELIMIT_FALLBACK.set(0)
            log.warning("Redis answers again: rate limits are shared in Redis once more")

    def abandon(self) -> None:
        """The call was cancelled (its client left): neither success nor failure, but a probe
        must not stay marked in flight, or the circuit would never probe again."""
        self._probing = False

    def failure(self, reason: str) -> None:
        now = self._clock()
        if self._failures == 0:
            self._first_failure = now
        self._failures += 1
        self._probing = False
        if self.open:
            self._next_probe = now + self.cooldown
        elif self._failures >= self.threshold and now - self._first_failure >= self.window:
            self._open(reason)

    def trip(self, reason: str) -> None:
        """Open now: Redis is known to be unreachable (no connection could be opened)."""
        if self._failures == 0:
            self._first_failure = self._clock()
        self._failures = max(self._failures, 1)
        if not self.open:
            self._open(reason)

    def _open(self, reason: str) -> None:
        self.open = True
        self._next_probe = self._clock() + self.cooldown
        metrics.RATELIMIT_FALLBACK.set(1)
        log.error(
            "Redis rate limiter failing (%s): failure policy %r in force until it answers",
            reason,
            self.policy,
        )

    def __repr__(self) -> str:
        state = "open" if self.open else "closed"
        return f"<CircuitBreaker {state} failures={self._failures} window={self.window}s>"
