"""The request log: one module_api_logs row per request, queued in memory, written in batches.

The seed awaits an INSERT per request (`logApiRequest`) and swallows its failure. Here a
request costs one deque append; a background task writes batches through an injected writer
(in the gateway: binary COPY in a transaction on the PostgresSource pool, proxy/store/logs.py).

Strategy:
- `record()` is the hot path: O(1), no await, no formatting. The queue is bounded by rows
  (`queue_size`) and by an estimate of the bytes its rows hold (`queue_bytes`, see
  `row_bytes`); a row that would pass either bound is dropped and counted
  (LOG_DROPPED{reason="queue_full"}). That is the only way a row is lost while the gateway runs:
  a request never waits for Postgres, and Postgres being down only makes the queue grow.
- Rows leave the queue oldest first, `batch_rows` at a time, as the *head* batch. The head
  is removed only once its write succeeded (or Postgres refused its rows, counted as
  write_failed), and it counts against the bounds until then. So rows are written in the order
  they were recorded, and memory is bounded by `queue_size` rows / `queue_bytes` bytes in all.
- A failed write (StoreError: Postgres down, or a timeout) keeps the head, whole and
  unchanged, and the next try waits for the backoff's delay (proxy/retry.py, on the
  injected clock): a dead server gets one try per delay, never a stream of batches, and the
  rows behind the head keep queueing. Once a try succeeds, the backlog is written at once.
  One WARNING per failure streak, one INFO when writes recover.
- A batch is never written twice: the writer writes it in one transaction, and the batch's
  `WriteAttempt` lets a retry ask Postgres whether an earlier COMMIT whose answer was lost did
  commit (proxy/store/commit.py).
- A writer that raises anything but StoreError has a bug, not an outage: that batch is dropped
  (write_failed, with a traceback once per streak) rather than retried for ever ahead of every
  row behind it.
- The task wakes every `flush_seconds`, or at once when `batch_rows` rows are queued
  (`record()` sets an Event; setting one is synchronous), and writes what the queue held when
  the flush began, so a flush ends under any load.
- `stop(deadline)` lets a write in flight finish, then keeps writing (with backoff) until the
  queue is empty or the deadline passes; what is left then is dropped, counted
  (reason="shutdown") and logged once with its count. Every recorded row is thus either
  written or counted as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final

from proxy.errors import StoreError
from proxy.observability import metrics
from proxy.retry import Backoff, WriteAttempt

log = logging.getLogger("modgate.request_log")

# The seed's module_api_logs columns (id is generated), then modgate's consumer_id (migration
# 0005), in the order of a LogRow.
COLUMNS = (
    "module_id", "site_id", "route_id", "method", "path", "query_params", "auth_type",
    "api_key_id", "user_id", "status_code", "response_time_ms", "error_message",
    "ip_address", "user_agent", "created_at", "consumer_id",
)  # fmt: skip

LogRow = tuple[
    str,  # module_id: a UUID
    str | None,  # site_id: a UUID, else stored as NULL
    str | None,  # route_id: a UUID; NULL when the route is gone by write time
    str,  # method
    str,  # path: after /api/modules/{id}, without the query
    str | None,  # query_params: JSON text of an object (stored as JSONB)
    str,  # auth_type: "api_key", "consumer", "jwt" or "none"
    str | None,  # api_key_id: a UUID; NULL when the key is gone by write time
    str | None,  # user_id: a UUID (a JWT `sub` that is not one is stored as NULL)
    int,  # status_code
    int,  # response_time_ms
    str | None,  # error_message
    str | None,  # ip_address
    str | None,  # user_agent (truncated when written)
    datetime,  # created_at: aware
    str | None,  # consumer_id: a UUID; NULL when the consumer is gone by write time
]

DEFAULT_RETRY_MAX_SECONDS: Final = 2.0  # Postgres back => rows flow again within this
# What a queued row holds besides its own text, measured with tracemalloc on rows as the
# observer builds them (CPython 3.11, 64-bit): the 16-slot tuple (184), its deque slot (8),
# created_at (48), the client address (~60) and the string headers of path, query and
# User-Agent (3 x 49). Shared values (ids, method, auth_type) cost nothing per row.
ROW_OVERHEAD_BYTES: Final = 448


def row_bytes(row: LogRow) -> int:
    """The memory a queued row holds, estimated: its own text plus ROW_OVERHEAD_BYTES."""
    return (
        ROW_OVERHEAD_BYTES
        + len(row[4])
        + len(row[5] or "")
        + len(row[11] or "")
        + len(row[13] or "")
    )


class LogBatch:
    """Rows written together, all or nothing, retried as one until written."""

    __slots__ = ("attempt", "nbytes", "rows")

    def __init__(self, rows: list[LogRow], nbytes: int) -> None:
        self.rows = rows
        self.nbytes = nbytes
        self.attempt: WriteAttempt[int] = WriteAttempt()  # the writer's memory across retries

    def __repr__(self) -> str:
        return f"<LogBatch {len(self.rows)} rows {self.attempt!r}>"


# Writes one batch; returns the rows it wrote (rows it had to refuse are counted as
# write_failed), or None for "all of them"; raises StoreError when Postgres fails (the batch is
# kept and tried again).
LogWriter = Callable[[LogBatch], Awaitable[int | None]]

_QUEUE_FULL = metrics.LOG_DROPPED.labels(reason="queue_full")  # bound once: record() is hot
_WRITE_FAILED = metrics.LOG_DROPPED.labels(reason="write_failed")
_SHUTDOWN = metrics.LOG_DROPPED.labels(reason="shutdown")


class RequestLog:
    __slots__ = (
        "_backoff",
        "_broken",
        "_bytes",
        "_clock",
        "_failing_since",
        "_head",
        "_held",
        "_lock",
        "_overflow",
        "_queue",
        "_retry_at",
        "_stop",
        "_task",
        "_wake",
        "_writer",
        "batch_rows",
        "flush_seconds",
        "queue_bytes",
        "queue_size",
    )

    def __init__(
        self,
        writer: LogWriter,
        *,
        queue_size: int,
        flush_seconds: float,
        batch_rows: int,
        queue_bytes: int | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes if queue_bytes is not None else queue_size * 2048
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self._backoff = backoff or Backoff(maximum=DEFAULT_RETRY_MAX_SECONDS)
        self._clock = clock
        self._queue: deque[LogRow] = deque()
        self._head: LogBatch | None = None  # being written, or waiting for its retry
        self._held = 0  # rows queued and in the head
        self._bytes = 0  # row_bytes() of those rows
        self._retry_at = 0.0  # on `clock`: no write before this after a failure
        self._failing_since: float | None = None  # a failure streak's start, on `clock`
        self._overflow = 0  # rows dropped as queue_full during the streak, for its end line
        self._broken = False  # the writer raised a non-StoreError: logged once until it works
        self._lock = asyncio.Lock()  # one writer at a time: the head is never sent twice at once
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """Rows recorded and not yet written: queued, and in the head batch."""
        return self._held

    @property
    def held_bytes(self) -> int:
        return self._bytes

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def record(self, row: LogRow) -> None:
        """Queue one row for writing; never blocks (a full queue drops the row, counted)."""
        # row_bytes(), inlined: this runs on every request.
        size = ROW_OVERHEAD_BYTES + len(row[4]) + len(row[5] or "") + len(row[11] or "")
        size += len(row[13] or "")
        held = self._held
        if held >= self.queue_size or self._bytes + size > self.queue_bytes:
            _QUEUE_FULL.inc()
            self._overflow += 1
            return
        queue = self._queue
        queue.append(row)
        self._held = held + 1
        self._bytes += size
        if len(queue) >= self.batch_rows:
            self._wake.set()

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="modgate-request-log")

    async def stop(self, deadline: float | None = None) -> None:
        """Finish a write in flight, then write what is held until `deadline` (event-loop
        time, retrying with backoff; None: one try). What is left then is dropped, counted
        (reason="shutdown") and logged once."""
        try:
            async with asyncio.timeout_at(deadline):
                task, self._task = self._task, None
                if task is not None:
                    self._stop.set()
                    self._wake.set()
                    await task
                await self._drain(retry=deadline is not None)
        except TimeoutError:
            pass
        left = self.held
        if left:
            _SHUTDOWN.inc(left)
            log.warning(
                "request log: %d rows not written by the end of the shutdown grace, dropped", left
            )
            self._queue.clear()
            self._head = None
            self._held = self._bytes = 0
        metrics.LOG_QUEUE_DEPTH.set(0)

    async def flush(self) -> int:
        """Write the rows held now, oldest first, a batch at a time; returns rows written.
        Ends at the first failed batch, which stays at the head; before that batch's retry is
        due (the backoff's delay after the failure, on the injected clock) it writes nothing."""
        if self._clock() < self._retry_at:
            return 0
        return await self._flush_held()

    async def _drain(self, *, retry: bool) -> None:
        while self.held:
            if self.failing and retry:
                await asyncio.sleep(max(0.0, self._retry_at - self._clock()))
            await self._flush_held()
            if self.failing and not retry:
                return

    async def _flush_held(self) -> int:
        async with self._lock:
            remaining = self.held  # rows recorded during the flush wait for the next one
            written = 0
            while remaining > 0:
                head = self._head or self._take()
                if head is None:
                    break
                stored = await self._write(head)
                if stored is None:
                    break
                remaining -= len(head.rows)
                written += stored
            metrics.LOG_QUEUE_DEPTH.set(self.held)
            return written

    def _take(self) -> LogBatch | None:
        queue = self._queue
        size = min(self.batch_rows, len(queue))
        if size == 0:
            return None
        rows = [queue.popleft() for _ in range(size)]
        self._head = LogBatch(rows, sum(map(row_bytes, rows)))
        return self._head

    def _release(self, head: LogBatch) -> None:
        self._head = None
        self._held -= len(head.rows)
        self._bytes -= head.nbytes

    async def _write(self, head: LogBatch) -> int | None:
        """One try at the head batch: the rows written (the head is released), or None when
        Postgres failed (the head is kept for a retry after the backoff's delay)."""
        try:
            result = await self._writer(head)
        except StoreError as exc:
            self._retry_at = self._clock() + self._backoff.next_delay()
            if self._failing_since is None:
                self._failing_since = self._clock()
                log.warning(
                    "request log: writes failing, keeping rows to retry (%d held): %s",
                    self.held,
                    exc,
                )
            return None
        except Exception:
            if not self._broken:  # once until a write succeeds: a bug repeats on every batch
                self._broken = True
                log.exception("request log: writer failed unexpectedly, dropping the batch")
            _WRITE_FAILED.inc(len(head.rows))
            self._release(head)
            return 0
        stored = len(head.rows) if result is None else result
        if stored < len(head.rows):
            _WRITE_FAILED.inc(len(head.rows) - stored)
        metrics.LOG_WRITTEN.inc(stored)
        self._release(head)
        self._backoff.reset()
        self._retry_at = 0.0
        self._broken = False
        if self._failing_since is not None:
            log.info(
                "request log: writes recovered after %.1fs (dropped meanwhile, queue_full: %d)",
                self._clock() - self._failing_since,
                self._overflow,
            )
            self._failing_since = None
        self._overflow = 0
        return stored

    async def _run(self) -> None:
        while not self._stop.is_set():
            if self.failing:
                # Postgres is failing: the next try is the backoff's, however full the queue
                # gets, so rows queue up instead of being fed to a dead server batch by batch.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), max(0.0, self._retry_at - self._clock())
                    )
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return  # stop() drains
            await self.flush()

    def __repr__(self) -> str:
        state = "failing" if self.failing else "ok"
        return (
            f"<RequestLog held={self.held}/{self.queue_size} rows "
            f"{self._bytes}/{self.queue_bytes} bytes {state} "
            f"every {self.flush_seconds}s or {self.batch_rows} rows>"
        )
