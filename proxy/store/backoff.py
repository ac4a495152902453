"""Reconnect backoff as an object: exponential, capped, with jitter from an injected source."""

from __future__ import annotations

import random
from collections.abc import Callable

DEFAULT_INITIAL_SECONDS = 0.05
DEFAULT_FACTOR = 2.0


class Backoff:
    """Delays 0.05, 0.1, 0.2, ... up to `maximum`, each scaled by a jitter in [0.5, 1.0).

    Jitter keeps a fleet of gateways that lost Postgres together from reconnecting in lockstep.
    """

    __slots__ = ("_attempt", "_rng", "factor", "initial", "maximum")

    def __init__(
        self,
        *,
        maximum: float,
        initial: float = DEFAULT_INITIAL_SECONDS,
        factor: float = DEFAULT_FACTOR,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._rng = rng
        self._attempt = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        return delay * (0.5 + self._rng() / 2)

    def reset(self) -> None:
        self._attempt = 0

    def __repr__(self) -> str:
        return f"<Backoff attempt={self._attempt} max={self.maximum}s>"
