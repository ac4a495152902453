"""The request log: one module_api_logs row per request, queued in memory, written in batches.

The seed awaits an INSERT per request (`logApiRequest`) and swallows its failure. Here a
request costs one deque append; a background task writes batches through an injected writer
(in the gateway: binary COPY on the PostgresSource pool, see proxy/store/logs.py).

Strategy:
- `record()` is the hot path: O(1), no await, no formatting. Past `queue_size` queued rows a
  row is dropped and counted (LOG_DROPPED{reason="queue_full"}); a request never waits for
  Postgres. Rows taken for a write in flight no longer count against the queue, so memory is
  bounded by `queue_size + batch_rows` rows.
- The task wakes every `flush_seconds`, or at once when `batch_rows` rows are queued
  (`record()` sets an Event; setting one is synchronous), and writes batches of at most
  `batch_rows` until the queue holds what it held when the flush began.
- A failed write (StoreError) drops that batch, counted as write_failed, and ends the flush;
  the next try is a full `flush_seconds` later whatever `record()` does. So during an outage
  one batch per interval is tried and lost, the rest keeps queueing (up to `queue_size`) and
  is written once Postgres is back: an outage loses at most what overflows, all of it counted.
  One WARNING per failure streak, one INFO when writes recover.
- `stop()` lets a write in flight finish (it is not cancelled half-sent), then drains the
  queue; a failure there ends the drain, and what is left is counted as write_failed. Every
  recorded row is thus either written or counted as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime

from proxy.errors import StoreError
from proxy.observability import metrics

log = logging.getLogger("modgate.request_log")

# The seed's module_api_logs columns (id is generated), in the order of a LogRow.
COLUMNS = (
    "module_id", "site_id", "route_id", "method", "path", "query_params", "auth_type",
    "api_key_id", "user_id", "status_code", "response_time_ms", "error_message",
    "ip_address", "user_agent", "created_at",
)  # fmt: skip

LogRow = tuple[
    str,  # module_id: a UUID
    str | None,  # site_id: a UUID, else stored as NULL
    str | None,  # route_id: a UUID; NULL when the route is gone by write time
    str,  # method
    str,  # path: after /api/modules/{id}, without the query
    str | None,  # query_params: JSON text of an object (stored as JSONB)
    str,  # auth_type: "api_key", "jwt" or "none"
    str | None,  # api_key_id: a UUID; NULL when the key is gone by write time
    str | None,  # user_id: a UUID (a JWT `sub` that is not one is stored as NULL)
    int,  # status_code
    int,  # response_time_ms
    str | None,  # error_message
    str | None,  # ip_address
    str | None,  # user_agent (truncated when written)
    datetime,  # created_at: aware
]
# Returns the rows it wrote (rows it had to refuse are counted as write_failed), or None for
# "all of them"; raises StoreError when Postgres fails.
LogWriter = Callable[[list[LogRow]], Awaitable[int | None]]

_QUEUE_FULL = metrics.LOG_DROPPED.labels(reason="queue_full")  # bound once: record() is hot
_WRITE_FAILED = metrics.LOG_DROPPED.labels(reason="write_failed")


class RequestLog:
    __slots__ = (
        "_failed_rows",
        "_failing",
        "_queue",
        "_stop",
        "_task",
        "_wake",
        "_writer",
        "batch_rows",
        "flush_seconds",
        "queue_size",
    )

    def __init__(
        self, writer: LogWriter, *, queue_size: int, flush_seconds: float, batch_rows: int
    ) -> None:
        self._writer = writer
        self.queue_size = queue_size
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self._queue: deque[LogRow] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failing = False  # in a failure streak: warned once, not again until it ends
        self._failed_rows = 0  # rows lost in the current streak, for the recovery line

    def record(self, row: LogRow) -> None:
        """Queue one row for writing; never blocks (a full queue drops the row, counted)."""
        queue = self._queue
        if len(queue) >= self.queue_size:
            _QUEUE_FULL.inc()
            return
        queue.append(row)
        if len(queue) >= self.batch_rows:
            self._wake.set()

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="modgate-request-log")

    async def stop(self) -> None:
        """Finish a write in flight, write what is queued, count what could not be written."""
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            self._wake.set()
            await task
        await self.flush()
        if self._queue:
            _WRITE_FAILED.inc(len(self._queue))
            log.warning("request log: %d rows not written at shutdown", len(self._queue))
            self._queue.clear()
        metrics.LOG_QUEUE_DEPTH.set(0)

    async def flush(self) -> int:
        """Write the rows queued now, in batches; returns rows written. A failed batch is
        dropped (counted) and ends the flush: the rest stays queued for the next one."""
        queue = self._queue
        remaining = len(queue)  # rows recorded during the flush wait for the next one
        written = 0
        while remaining > 0 and queue:  # a concurrent flush may have taken some
            size = min(remaining, self.batch_rows, len(queue))
            remaining -= size
            batch = [queue.popleft() for _ in range(size)]
            metrics.LOG_QUEUE_DEPTH.set(len(queue))
            stored = await self._write(batch)
            if stored is None:
                break
            written += stored
        metrics.LOG_QUEUE_DEPTH.set(len(queue))
        return written

    async def _write(self, batch: list[LogRow]) -> int | None:
        """One attempt at one batch: rows written, or None when it failed (and was dropped)."""
        try:
            result = await self._writer(batch)
        except Exception as exc:
            _WRITE_FAILED.inc(len(batch))
            self._failed_rows += len(batch)
            if not self._failing:
                self._failing = True
                if isinstance(exc, StoreError):
                    log.warning("request log: writes failing, dropping batches: %s", exc)
                else:  # a bug, not an outage: keep the traceback
                    log.exception("request log: writer failed unexpectedly, dropping batches")
            return None
        stored = len(batch) if result is None else result
        if stored < len(batch):
            _WRITE_FAILED.inc(len(batch) - stored)
        metrics.LOG_WRITTEN.inc(stored)
        if self._failing:
            log.info("request log: writes recovered (%d rows dropped meanwhile)", self._failed_rows)
            self._failing = False
            self._failed_rows = 0
        return stored

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return  # stop() drains
            await self.flush()
            if self._failing:
                # Postgres is failing: wait a whole interval however full the queue gets, so
                # rows queue up instead of being fed batch after batch to a dead server.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.flush_seconds)

    def __repr__(self) -> str:
        state = "failing" if self._failing else "ok"
        return (
            f"<RequestLog queued={len(self._queue)}/{self.queue_size} {state} "
            f"every {self.flush_seconds}s or {self.batch_rows} rows>"
        )
