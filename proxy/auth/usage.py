"""Key usage (`last_used_at`, `request_count`) counted in memory and written in batches.

The seed updates the key row on every request: one write per call, on the request path.
Here a request costs a dict update; a background task writes every `interval` seconds in one
statement. The table of pending counts is bounded: past `max_keys` distinct keys between two
flushes, new keys' usage is dropped and counted (a metric), never blocking a request. A failed
write puts the counts back for the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from proxy.errors import StoreError
from proxy.observability import metrics

log = logging.getLogger("modgate.usage")

DEFAULT_MAX_KEYS = 100_000
UsageWriter = Callable[[Mapping[str, tuple[int, datetime]]], Awaitable[None]]


class UsageRecorder:
    def __init__(
        self,
        writer: UsageWriter,
        *,
        interval: float,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer = writer
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._pending: dict[str, list[float]] = {}  # key id -> [count, last use (epoch)]
        self._task: asyncio.Task[None] | None = None

    def record(self, key_id: str) -> None:
        entry = self._pending.get(key_id)
        if entry is not None:
            entry[0] += 1
            entry[1] = self._clock()
        elif len(self._pending) < self.max_keys:
            self._pending[key_id] = [1, self._clock()]
        else:
            metrics.USAGE_DROPPED.inc()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="modgate-usage-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()  # the last counts of a draining worker are not lost

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> int:
        """Write what is pending; returns the number of keys written."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        usage = {
            key_id: (int(count), datetime.fromtimestamp(last, UTC))
            for key_id, (count, last) in batch.items()
        }
        try:
            await self._writer(usage)
        except StoreError as exc:
            log.warning("key usage not written (%d keys), retrying next flush: %s", len(batch), exc)
            metrics.USAGE_FLUSH_FAILURES.inc()
            for key_id, (count, last) in batch.items():
                entry = self._pending.get(key_id)
                if entry is not None:
                    entry[0] += count
                    entry[1] = max(entry[1], last)
                elif len(self._pending) < self.max_keys:
                    self._pending[key_id] = [count, last]
                else:
                    metrics.USAGE_DROPPED.inc()
            return 0
        return len(usage)

    def __repr__(self) -> str:
        return f"<UsageRecorder pending={len(self._pending)} every {self.interval}s>"
