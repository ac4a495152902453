"""module_api_logs in Postgres: batched writes of the request log, and retention.

Strategy for writes: one binary COPY per batch (asyncpg `copy_records_to_table`), the fastest
way into a table, in a transaction run by `write_once` (proxy/store/commit.py): a batch is
written whole or not at all, and a retry after a COMMIT whose answer was lost asks Postgres
whether it committed instead of writing the rows a second time (the batch's `WriteAttempt`
carries that across retries). A refused batch (a data or constraint error no preparation here
foresaw) is logged and reported as 0 rows written: retrying it could only fail again and hold up
every batch behind it. A COPY is all or nothing, so every value is made storable first, in
Python, off the request path: a UUID column gets a canonical UUID or NULL (a JWT `sub` or a site
id that is not a UUID becomes NULL), text loses NUL characters (TEXT cannot hold them) and lone
surrogates (aiohttp decodes headers with surrogateescape; they cannot be encoded), long text is
cut, integers are clamped to INTEGER, and JSON text with a \\u0000 escape (JSONB refuses it) is
re-encoded without it. A row whose module_id is not a UUID cannot be stored (NOT NULL) and is
left out; `write_logs` returns the rows it wrote.

The foreign keys are ON DELETE SET NULL, which covers rows already written but not rows on
their way: a route or key deleted between a request and its write fails the whole COPY. Then
the batch is written again in a new transaction that first locks the referenced routes, keys
and consumers that still exist (FOR KEY SHARE, so none can be deleted before the COPY commits)
and sets the ids of the vanished ones to NULL. That costs three queries, only on that rare path.

Strategy for retention: DELETE in batches of `batch` rows (found through idx_api_logs_date,
deleted by ctid), each its own statement and so its own short transaction: no long lock, no
huge transaction, and the cutoff is fixed once so the loop ends. `prune_if_leader` runs that
under a session advisory lock taken with pg_try_advisory_lock, so of many gateways one prunes
and the others skip the round.

Postgres and socket failures become StoreError. Use a connection outside any transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar

import asyncpg
import orjson

from proxy.auth.key_fields import INT4_MAX, canonical_uuid
from proxy.errors import StoreError
from proxy.observability.request_log import COLUMNS, LogRow
from proxy.retry import WriteAttempt
from proxy.store.commit import write_once
from proxy.store.migrate import CONNECTION_ERRORS
from proxy.tasks import cancel_and_wait

T = TypeVar("T")

log = logging.getLogger("modgate.request_log")

TABLE: Final = "module_api_logs"
INT4_MIN: Final = -INT4_MAX - 1
DEFAULT_PRUNE_BATCH: Final = 10_000
DEFAULT_PRUNE_FIRST_DELAY: Final = 30.0  # let a starting gateway warm up before pruning
# Any fixed bigint nothing else in the database uses: b"mg-prune".
PRUNE_LOCK_ID: Final = int.from_bytes(b"mg-prune", "big")

# Longest text kept per column: enough for any real value, short of a megabyte of header.
PATH_MAX: Final = 2048
USER_AGENT_MAX: Final = 512
ERROR_MESSAGE_MAX: Final = 1024
SHORT_MAX: Final = 128  # method, auth_type, ip_address

_ROUTE, _KEY = COLUMNS.index("route_id"), COLUMNS.index("api_key_id")
_CONSUMER = COLUMNS.index("consumer_id")

_LIVE_ROUTES = "SELECT id::text FROM module_api_routes WHERE id = ANY($1::uuid[]) FOR KEY SHARE"
_LIVE_KEYS = "SELECT id::text FROM module_api_keys WHERE id = ANY($1::uuid[]) FOR KEY SHARE"
_LIVE_CONSUMERS = (
    "SELECT id::text FROM module_api_consumers WHERE id = ANY($1::uuid[]) FOR KEY SHARE"
)
_CUTOFF = "SELECT NOW() - $1::interval"
_PRUNE_BATCH = f"""
DELETE FROM {TABLE} WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM {TABLE} WHERE created_at < $1 LIMIT $2))
"""
_TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
_UNLOCK = "SELECT pg_advisory_unlock($1)"


async def write_logs(
    conn: Any, rows: Sequence[LogRow], attempt: WriteAttempt[int] | None = None
) -> int:
    """Insert request log rows with one binary COPY in a transaction; returns the rows written.

    Pass the same `attempt` to every retry of one batch: a batch whose earlier COMMIT went
    unanswered is then never written twice.
    """
    if not rows:
        return 0
    attempt = attempt if attempt is not None else WriteAttempt()
    try:
        try:
            written, _ = await write_once(conn, attempt, lambda c: _copy(c, rows))
        except asyncpg.ForeignKeyViolationError:
            written, _ = await write_once(conn, attempt, lambda c: _copy_fixing_refs(c, rows))
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        log.warning("request log: Postgres refused a batch of %d rows, dropped: %s", len(rows), exc)
        return 0
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        raise StoreError(f"cannot write {len(rows)} request log rows: {exc}") from exc
    return written


async def _copy(conn: Any, rows: Sequence[LogRow]) -> int:
    sent: list[tuple[Any, ...]] = []
    await conn.copy_records_to_table(TABLE, records=_sliced(rows, sent), columns=COLUMNS)
    return len(sent)


async def _copy_fixing_refs(conn: Any, rows: Sequence[LogRow]) -> int:
    records = [record for record in map(_storable, rows) if record is not None]
    records = await _without_vanished_refs(conn, records)
    await conn.copy_records_to_table(TABLE, records=records, columns=COLUMNS)
    return len(records)


# Rows are made storable (and encoded by asyncpg) this many at a time, with the event loop let
# in between: done for a whole batch at once, `_storable` alone held every request for 2.9 ms
# per 750 rows (3.9 µs a row), a stall every flush at a few thousand requests/s.
_SLICE_ROWS = 64


async def _sliced(rows: Sequence[LogRow], sent: list[tuple[Any, ...]]) -> AsyncIterator[Any]:
    for i, row in enumerate(rows, 1):
        record = _storable(row)
        if record is not None:
            sent.append(record)
            yield record
        if i % _SLICE_ROWS == 0:
            await asyncio.sleep(0)


async def prune_logs(conn: Any, older_than: timedelta, *, batch: int = DEFAULT_PRUNE_BATCH) -> int:
    """Delete rows created before NOW() - older_than, `batch` rows per statement; returns
    the number deleted."""
    cutoff = await _run(conn.fetchval(_CUTOFF, older_than), "compute the prune cutoff")
    total = 0
    while True:
        status = await _run(conn.execute(_PRUNE_BATCH, cutoff, batch), "prune request logs")
        deleted = int(status.rpartition(" ")[2])  # "DELETE 10000"
        total += deleted
        if deleted < batch:
            return total


async def prune_if_leader(
    conn: Any, older_than: timedelta, *, batch: int = DEFAULT_PRUNE_BATCH
) -> int | None:
    """`prune_logs` if no other session is pruning (advisory lock), else None."""
    if not await _run(conn.fetchval(_TRY_LOCK, PRUNE_LOCK_ID), "take the prune lock"):
        return None
    try:
        return await prune_logs(conn, older_than, batch=batch)
    finally:
        # After a failure or a cancellation the connection may be unusable; the server then
        # frees the lock with the session, and a pool's reset on release unlocks all anyway.
        with contextlib.suppress(asyncpg.PostgresError, *CONNECTION_ERRORS):
            await conn.execute(_UNLOCK, PRUNE_LOCK_ID)


class Execute(Protocol):
    """`PostgresSource.execute`: run `work(connection)` on a pooled connection."""

    def __call__(self, work: Callable[[Any], Awaitable[T]], /) -> Awaitable[T]: ...


class LogPruner:
    """Every `interval` seconds (the first time `first_delay` after start), delete the rows
    older than `retention_days` if no other gateway is doing it. Failures are logged, never
    raised: the next round tries again."""

    def __init__(
        self,
        execute: Execute,
        *,
        retention_days: int,
        interval: float = 3600.0,
        first_delay: float = DEFAULT_PRUNE_FIRST_DELAY,
        batch: int = DEFAULT_PRUNE_BATCH,
    ) -> None:
        self._execute = execute
        self.retention_days = retention_days
        self.interval = interval
        self.first_delay = first_delay
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="modgate-log-prune")

    async def stop(self) -> None:
        # Cancelling mid-prune loses nothing: each batch committed on its own.
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def prune_once(self) -> int | None:
        """One round: rows deleted, or None when another gateway pruned or Postgres failed."""
        older_than = timedelta(days=self.retention_days)
        try:
            deleted = await self._execute(
                lambda conn: prune_if_leader(conn, older_than, batch=self.batch)
            )
        except StoreError as exc:
            log.warning("request log prune failed, next try in %.0fs: %s", self.interval, exc)
            return None
        if deleted is None:
            log.debug("request log prune skipped: another gateway holds the prune lock")
        else:
            log.info("deleted %d request log rows older than %d days", deleted, self.retention_days)
        return deleted

    async def _run(self) -> None:
        delay = self.first_delay
        while True:
            await asyncio.sleep(delay)
            delay = self.interval
            try:
                await self.prune_once()
            except Exception:  # a bug must not end retention for the life of the process
                log.exception("request log prune failed unexpectedly")

    def __repr__(self) -> str:
        return f"<LogPruner keep {self.retention_days} days, every {self.interval}s>"


# -- rows -----------------------------------------------------------------------------------


def _storable(row: LogRow) -> tuple[Any, ...] | None:
    """The row with every value made acceptable to its column; None if it cannot be stored."""
    (module_id, site_id, route_id, method, path, query, auth_type, key_id, user_id,
     status, elapsed, error, ip, agent, created_at, consumer_id) = row  # fmt: skip
    module = canonical_uuid(module_id)
    if module is None:
        return None
    return (
        module,
        canonical_uuid(site_id),
        canonical_uuid(route_id),
        _text(method, SHORT_MAX) or "",
        _text(path, PATH_MAX) or "",
        _json(query),
        _text(auth_type, SHORT_MAX),
        canonical_uuid(key_id),
        canonical_uuid(user_id),
        _int4(status),
        _int4(elapsed),
        _text(error, ERROR_MESSAGE_MAX),
        _text(ip, SHORT_MAX),
        _text(agent, USER_AGENT_MAX),
        created_at if created_at is not None else datetime.now(UTC),
        canonical_uuid(consumer_id),
    )


def _text(value: object, limit: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> "?"
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text[:limit]


def _json(value: str | None) -> str | None:
    if value is None or "\\u0000" not in value:
        return value
    try:
        return orjson.dumps(_without_nul(orjson.loads(value))).decode()
    except orjson.JSONDecodeError:
        return None


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {k.replace("\x00", ""): _without_nul(v) for k, v in value.items()}
    return value


def _int4(value: int | None) -> int | None:
    return None if value is None else min(max(int(value), INT4_MIN), INT4_MAX)


async def _without_vanished_refs(
    conn: Any, records: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """The records with route, key and consumer ids that no longer exist set to NULL; the
    ones that exist stay locked until the transaction ends."""
    refs = (
        (_ROUTE, await _live(conn, _LIVE_ROUTES, (r[_ROUTE] for r in records))),
        (_KEY, await _live(conn, _LIVE_KEYS, (r[_KEY] for r in records))),
        (_CONSUMER, await _live(conn, _LIVE_CONSUMERS, (r[_CONSUMER] for r in records))),
    )
    out = []
    for record in records:
        if all(record[i] is None or record[i] in live for i, live in refs):
            out.append(record)
            continue
        fixed = list(record)
        for i, live in refs:
            if fixed[i] not in live:
                fixed[i] = None
        out.append(tuple(fixed))
    return out


async def _live(conn: Any, query: str, ids: Iterable[str | None]) -> set[str]:
    wanted = list({i for i in ids if i is not None})
    return {row[0] for row in await conn.fetch(query, wanted)} if wanted else set()


async def _run(awaitable: Awaitable[Any], action: str) -> Any:
    try:
        return await awaitable
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        raise StoreError(f"cannot {action}: {exc}") from exc
