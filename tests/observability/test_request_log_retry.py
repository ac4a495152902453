"""The request log's retry rule with a scripted writer: kept, retried after the backoff (on an
injected clock), in order, bounded by rows and bytes, flushed by stop() within its deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import pytest

from proxy.errors import StoreError
from proxy.observability.request_log import LogBatch, LogRow, RequestLog, row_bytes
from proxy.retry import Backoff
from tests.observability.test_request_log import dropped, row, written
from tests.support.polling import eventually


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Postgres:
    """A writer that fails while `down`, and otherwise keeps what it was sent."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.rows: list[LogRow] = []
        self.tries: list[tuple[int, list[str]]] = []  # (batch identity, its paths)

    async def __call__(self, batch: LogBatch) -> None:
        self.tries.append((id(batch), [r[4] for r in batch.rows]))
        if self.down:
            raise StoreError("Postgres is down")
        self.rows.extend(batch.rows)

    @property
    def paths(self) -> list[str]:
        return [r[4] for r in self.rows]


def paths(n: int, start: int = 0) -> list[str]:
    return [f"/contacts/{i}" for i in range(start, start + n)]


async def test_a_failed_batch_is_retried_whole_after_the_backoff_on_the_injected_clock() -> None:
    clock, pg = Clock(), Postgres(down=True)
    backoff = Backoff(maximum=0.5, initial=0.125, rng=lambda: 1.0)  # 0.125, 0.25, 0.5, 0.5
    log = RequestLog(
        pg, queue_size=100, flush_seconds=60, batch_rows=4, backoff=backoff, clock=clock
    )
    for n in range(10):
        log.record(row(n))

    assert await log.flush() == 0  # try 1 at t=0 fails: next at 0.125
    assert await log.flush() == 0  # not due: nothing sent
    clock.now = 0.124
    assert await log.flush() == 0
    assert len(pg.tries) == 1
    clock.now = 0.125
    assert await log.flush() == 0  # try 2 fails: next at 0.375
    clock.now = 0.375
    assert await log.flush() == 0  # try 3 fails: next at 0.875
    assert log.failing and log.held == 10
    pg.down = False
    clock.now = 0.874
    assert await log.flush() == 0
    clock.now = 0.875
    assert await log.flush() == 10  # the head, then the rest: the backlog goes at once

    first = pg.tries[0]
    assert pg.tries[:4] == [first] * 4  # the same batch object with the same rows each time
    assert [p for _, p in pg.tries[4:]] == [paths(4, 4), paths(2, 8)]
    assert pg.paths == paths(10)
    assert not log.failing and log.held == 0 and log.held_bytes == 0


async def test_rows_recorded_through_an_outage_are_all_written_once_in_order() -> None:
    pg = Postgres()
    log = RequestLog(
        pg, queue_size=10_000, flush_seconds=0.01, batch_rows=50,
        backoff=Backoff(maximum=0.02, initial=0.005),
    )  # fmt: skip
    await log.start()
    before_written = written()
    try:
        for n in range(300):
            log.record(row(n))
        await eventually(lambda: len(pg.rows) == 300)
        pg.down = True
        tries_before = len(pg.tries)
        for n in range(300, 1500):
            log.record(row(n))
            if n % 100 == 0:
                await asyncio.sleep(0)  # requests keep coming while Postgres is away
        await eventually(lambda: len(pg.tries) >= tries_before + 3)  # retried, and failing
        assert len(pg.rows) == 300
        pg.down = False
        await eventually(lambda: len(pg.rows) == 1500)
    finally:
        await log.stop()
    assert pg.paths == paths(1500)  # in order, none twice
    assert written() - before_written == 1500


async def test_the_byte_bound_drops_exactly_the_overflow() -> None:
    pg = Postgres(down=True)
    size = row_bytes(row(0))  # every row(n) below has the same size: n < 10
    log = RequestLog(pg, queue_size=1000, queue_bytes=6 * size, flush_seconds=60, batch_rows=4)
    before = dropped("queue_full")
    for n in range(10):
        log.record(row(n))
    assert log.held == 6 and log.held_bytes == 6 * size
    assert dropped("queue_full") - before == 4
    await log.flush()  # fails: the head (4 rows) still counts against the bound
    log.record(row(9))
    assert dropped("queue_full") - before == 5
    pg.down = False
    await log.stop()
    assert pg.paths == paths(6)


def test_row_bytes_follows_the_text_a_row_holds() -> None:
    short: LogRow = (
        "m", None, None, "GET", "/a", None, "none", None, None, 200, 1, None, None, None,
        datetime.now(UTC), None,
    )  # fmt: skip
    long = (*short[:4], "/a" * 100, '{"q": "1"}', *short[6:11], "boom", None, "UA" * 50,
            *short[14:])  # fmt: skip
    assert row_bytes(long) - row_bytes(short) == 198 + 10 + 4 + 100


async def test_refused_rows_are_counted_and_a_writer_bug_drops_only_its_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[int] = []

    async def writer(batch: LogBatch) -> int:
        sent.append(len(batch.rows))
        if len(sent) in (2, 3):
            raise ValueError("a bug")
        return len(batch.rows) - 1  # one row of each batch refused

    log = RequestLog(writer, queue_size=100, flush_seconds=60, batch_rows=3)
    before_failed, before_written = dropped("write_failed"), written()
    for n in range(12):
        log.record(row(n))
    assert await log.flush() == 2 + 0 + 0 + 2
    assert sent == [3, 3, 3, 3]
    assert dropped("write_failed") - before_failed == 1 + 3 + 3 + 1
    assert written() - before_written == 4
    bugs = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(bugs) == 1  # once per streak, with the traceback
    assert bugs[0].exc_info is not None


async def test_stop_retries_until_the_deadline_then_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="modgate.request_log")
    pg = Postgres(down=True)
    log = RequestLog(
        pg, queue_size=100, flush_seconds=0.01, batch_rows=5,
        backoff=Backoff(maximum=0.05, initial=0.01),
    )  # fmt: skip
    await log.start()
    for n in range(7):
        log.record(row(n))
    before = dropped("shutdown")
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    await log.stop(loop.time() + 0.3)
    took = time.monotonic() - started

    assert 0.3 <= took < 0.3 + 1.0  # by the deadline, give or take a busy machine
    assert len(pg.tries) >= 3 and {p[0] for _, p in pg.tries} == {"/contacts/0"}
    assert dropped("shutdown") - before == 7
    lines = [r.getMessage() for r in caplog.records if "shutdown" in r.getMessage()]
    assert lines == ["request log: 7 rows not written by the end of the shutdown grace, dropped"]


async def test_stop_writes_everything_once_postgres_returns_within_the_deadline() -> None:
    pg = Postgres(down=True)
    log = RequestLog(
        pg, queue_size=100, flush_seconds=0.01, batch_rows=5,
        backoff=Backoff(maximum=0.05, initial=0.01),
    )  # fmt: skip
    await log.start()
    for n in range(12):
        log.record(row(n))
    before = dropped("shutdown")
    stopping = asyncio.create_task(log.stop(asyncio.get_running_loop().time() + 10))
    await eventually(lambda: len(pg.tries) >= 3)
    assert not stopping.done()
    pg.down = False
    await asyncio.wait_for(stopping, 5)
    assert pg.paths == paths(12)
    assert dropped("shutdown") == before
