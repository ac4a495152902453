"""Key usage (`last_used_at`, `request_count`) counted in memory and written in batches.

The seed updates the key row on every request: one write per call, on the request path.
Here a request costs a dict update; a background task writes every `interval` seconds in one
statement.

Strategy (the request log's rule, proxy/observability/request_log.py):
- Bounded: at most `max_keys` distinct keys are pending; past it a new key's use is dropped and
  counted (USAGE_DROPPED{reason="too_many_keys"}), never blocking a request. Keys already
  pending keep counting.
- Kept and retried: a flush takes the pending counts as one batch. A failed write keeps that
  batch, unchanged, as the next one to write (new uses pend beside it, so memory is bounded by
  2 x `max_keys` keys); it is tried again after the backoff's delay (proxy/retry.py, on
  the injected clock), before anything newer.
- Never counted twice: the writer runs each batch in a transaction, and the batch's
  `WriteAttempt` lets a retry ask Postgres whether an earlier COMMIT whose answer was lost did
  commit (proxy/store/commit.py), instead of adding the same counts again.
- Flushed on stop: `stop(deadline)` lets a write in flight finish, then writes what is left,
  retrying with backoff until the deadline; the uses still unwritten then are dropped, counted
  (reason="shutdown") and logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from proxy.errors import StoreError
from proxy.observability import metrics
from proxy.retry import Backoff, WriteAttempt

log = logging.getLogger("modgate.usage")

DEFAULT_MAX_KEYS: Final = 100_000
DEFAULT_RETRY_MAX_SECONDS: Final = 2.0
Usage = Mapping[str, tuple[int, datetime]]  # key id -> (requests, last use)
# Adds one batch's counts; raises StoreError when Postgres fails (the batch is kept and retried
# with the same attempt).
UsageWriter = Callable[[Usage, WriteAttempt[None]], Awaitable[None]]

_TOO_MANY_KEYS = metrics.USAGE_DROPPED.labels(reason="too_many_keys")
_SHUTDOWN = metrics.USAGE_DROPPED.labels(reason="shutdown")


class UsageBatch:
    """Counts written together, retried as one until written."""

    __slots__ = ("attempt", "usage")

    def __init__(self, usage: dict[str, tuple[int, datetime]]) -> None:
        self.usage = usage
        self.attempt: WriteAttempt[None] = WriteAttempt()

    @property
    def requests(self) -> int:
        return sum(count for count, _ in self.usage.values())


class UsageRecorder:
    def __init__(
        self,
        writer: UsageWriter,
        *,
        interval: float,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        self._writer = writer
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock  # epoch seconds: last-use times, and when a retry is due
        self._backoff = backoff or Backoff(maximum=min(interval, DEFAULT_RETRY_MAX_SECONDS))
        self._pending: dict[str, list[float]] = {}  # key id -> [count, last use (epoch)]
        self._unsent: UsageBatch | None = None  # a batch whose write failed: written first
        self._retry_at = 0.0
        self._failing = False
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending_requests(self) -> int:
        """Uses recorded and not yet written."""
        unsent = self._unsent.requests if self._unsent is not None else 0
        return unsent + int(sum(entry[0] for entry in self._pending.values()))

    def record(self, key_id: str) -> None:
        entry = self._pending.get(key_id)
        if entry is not None:
            entry[0] += 1
            entry[1] = self._clock()
        elif len(self._pending) < self.max_keys:
            self._pending[key_id] = [1, self._clock()]
        else:
            _TOO_MANY_KEYS.inc()

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="modgate-usage-flush")

    async def stop(self, deadline: float | None = None) -> None:
        """Finish a write in flight, then write what is pending until `deadline` (event-loop
        time, retrying with backoff; None: one try). What is left is dropped, counted, logged."""
        try:
            async with asyncio.timeout_at(deadline):
                task, self._task = self._task, None
                if task is not None:
                    self._stop.set()
                    await task
                while self._unsent is not None or self._pending:
                    if self._failing and deadline is not None:
                        await asyncio.sleep(max(0.0, self._retry_at - self._clock()))
                    try:
                        await self._flush_all()
                    except Exception:  # a bug: what is left is counted below
                        log.exception("key usage flush failed unexpectedly")
                        break
                    if self._failing and deadline is None:
                        break
        except TimeoutError:
            pass
        left = self.pending_requests
        if left:
            keys = len(self._pending) + (len(self._unsent.usage) if self._unsent else 0)
            _SHUTDOWN.inc(left)
            log.warning(
                "key usage: %d requests on %d keys not written by the end of the shutdown "
                "grace, dropped",
                left,
                keys,
            )
            self._pending.clear()
            self._unsent = None

    async def flush(self) -> int:
        """Write the failed batch (if any), then what is pending; returns the keys written.
        Before a failed batch's retry is due (on the injected clock) it writes nothing."""
        if self._clock() < self._retry_at:
            return 0
        return await self._flush_all()

    async def _flush_all(self) -> int:
        async with self._lock:
            written = 0
            while True:
                batch = self._unsent or self._take()
                if batch is None:
                    return written
                if not await self._write(batch):
                    return written
                written += len(batch.usage)

    def _take(self) -> UsageBatch | None:
        if not self._pending:
            return None
        pending, self._pending = self._pending, {}
        usage = {
            key_id: (int(count), datetime.fromtimestamp(last, UTC))
            for key_id, (count, last) in pending.items()
        }
        self._unsent = UsageBatch(usage)
        return self._unsent

    async def _write(self, batch: UsageBatch) -> bool:
        try:
            await self._writer(batch.usage, batch.attempt)
        except StoreError as exc:
            metrics.USAGE_FLUSH_FAILURES.inc()
            self._retry_at = self._clock() + self._backoff.next_delay()
            if not self._failing:
                self._failing = True
                log.warning(
                    "key usage not written (%d keys), keeping it to retry: %s",
                    len(batch.usage),
                    exc,
                )
            return False
        self._unsent = None
        self._backoff.reset()
        self._retry_at = 0.0
        if self._failing:
            self._failing = False
            log.info("key usage writes recovered")
        return True

    async def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.interval
            if self._failing:
                delay = min(delay, max(0.0, self._retry_at - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return  # stop() writes what is left
            try:
                await self.flush()
            except Exception:  # a bug must not end usage accounting for the life of the process
                log.exception("key usage flush failed unexpectedly")

    def __repr__(self) -> str:
        state = "failing" if self._failing else "ok"
        unsent = len(self._unsent.usage) if self._unsent is not None else 0
        return (
            f"<UsageRecorder pending={len(self._pending)} unsent={unsent} {state} "
            f"every {self.interval}s>"
        )
