"""What a retried operation keeps between tries: when to try again (`Backoff`) and, for a
Postgres write, which transaction's COMMIT went unanswered (`WriteAttempt`, used by
`proxy/store/commit.py`'s `write_once`).

A leaf module: the subsystems that retry (the store, the usage recorder, the request log, the
Redis limiter, the supervisor) import it without importing each other.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

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


class WriteAttempt(Generic[T]):
    """One write's memory across retries: the transaction whose COMMIT went unanswered, or the
    one a broken connection left open on the server before its COMMIT was sent (an orphan)."""

    __slots__ = ("backend_pid", "orphan", "result", "xid")

    def __init__(self) -> None:
        self.xid: int | None = None
        self.backend_pid: int | None = None
        self.result: T | None = None
        # (backend pid, txid) of a transaction abandoned before COMMIT: it cannot commit, but
        # may still hold its locks on the server; the next write ends it first.
        self.orphan: tuple[int, int] | None = None

    @property
    def unsettled(self) -> bool:
        """True while an earlier call may have committed: a retry asks before writing."""
        return self.xid is not None

    def clear(self) -> None:
        self.xid = self.backend_pid = self.result = self.orphan = None

    def __repr__(self) -> str:
        state = f"unsettled xid={self.xid} pid={self.backend_pid}" if self.xid else "settled"
        if self.orphan is not None:
            state += f" orphan xid={self.orphan[1]} pid={self.orphan[0]}"
        return f"<WriteAttempt {state}>"
