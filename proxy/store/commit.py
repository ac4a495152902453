"""Writes that a retry never applies twice: a lost COMMIT answer is asked about, not guessed.

A transaction makes a batch all or nothing, which settles every failure but one: the
connection breaks after COMMIT was sent. The server may have committed (and the answer was
lost) or not (COMMIT never arrived); writing the batch again could store it twice.

Strategy: `write_once` runs the work in a transaction that first reads its own transaction id
(`txid_current()`) and backend pid, and the `WriteAttempt` remembers them when a failure may
have left that transaction behind on the server:
- COMMIT in flight: the next call with the same attempt asks `txid_status(xid)` first:
  - committed: the earlier call wrote it; its result is returned and nothing is written again;
  - aborted (or unknown: an xid older than the server still tracks): written again;
  - in progress: the old session still holds the transaction open (a partition: the server did
    not see the connection die). Its backend is terminated and the call fails with StoreError;
    the retry after that finds it aborted or committed.
- Broken before COMMIT was sent (a timeout, a lost connection, a cancellation): the server never
  commits it, but a partition can leave it open, "idle in transaction", still holding the locks
  its statements took (the row of a usage UPDATE, the FOR KEY SHARE locks of a log COPY), and
  every retry would wait on them. It is remembered as the attempt's orphan, and the next call
  with the attempt terminates its backend before writing. A failure the server answered
  (PostgresError) is rolled back on the spot and leaves nothing to remember.
A backend is terminated only while it still runs that very transaction (`backend_xid` checked in
the same statement), so a pid reused by another session is never hit; terminating is allowed
for one's own role, and where it is not, `idle_in_transaction_session_timeout` (set on every
transaction) still ends an orphan within IDLE_IN_TRANSACTION_MS.

Postgres and socket failures propagate as they are: callers translate them to StoreError.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, cast

import asyncpg

from proxy.errors import StoreError
from proxy.retry import WriteAttempt
from proxy.store.migrate import CONNECTION_ERRORS

T = TypeVar("T")

log = logging.getLogger("modgate.store")

# Long enough for any COPY of a batch to finish; short enough that an orphaned transaction
# (and the FOR KEY SHARE locks of proxy/store/logs.py) does not outlive a short outage by much.
IDLE_IN_TRANSACTION_MS: Final = 30_000

_BEGIN = (
    "SELECT txid_current(), pg_backend_pid(),"
    " set_config('idle_in_transaction_session_timeout', $1, true)"
)
_STATUS = "SELECT txid_status($1)"
# $1: backend pid, $2: txid_current() of its transaction (64 bits: epoch and xid); returns true
# when that backend, still in that transaction, was told to end, NULL when it is gone or moved on.
_TERMINATE = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE pid = $1 AND backend_xid = ($2::bigint % 4294967296)::text::xid
"""


async def write_once(
    conn: Any, attempt: WriteAttempt[T], work: Callable[[Any], Awaitable[T]]
) -> tuple[T, bool]:
    """Run `work(conn)` in a transaction unless an earlier call with `attempt` committed it.

    Returns (result, already): `already` is True when an earlier call's commit is what
    counts, and `result` is then that call's. Use a connection outside any transaction.
    """
    if attempt.orphan is not None:
        pid, xid = attempt.orphan
        await _end_transaction(conn, pid, xid, "its connection broke before COMMIT")
        attempt.orphan = None
    if attempt.xid is not None:
        status = await conn.fetchval(_STATUS, attempt.xid)
        if status == "committed":
            result = cast(T, attempt.result)  # set together with xid
            attempt.clear()
            return result, True
        if status == "in progress":
            await _end_transaction(
                conn, cast(int, attempt.backend_pid), attempt.xid, "its COMMIT went unanswered"
            )
            raise StoreError(
                f"an earlier write (transaction {attempt.xid}) is still open on the server; "
                "its session was asked to end, retrying later"
            )
        attempt.clear()  # aborted, or too old to tell (NULL): it was not written
    transaction = conn.transaction()
    await transaction.start()
    opened: tuple[int, int] | None = None
    try:
        xid, pid, _ = await conn.fetchrow(_BEGIN, str(IDLE_IN_TRANSACTION_MS))
        opened = (pid, xid)
        result = await work(conn)
    except asyncpg.PostgresError:
        # COMMIT was never sent: the server cannot have committed, there is nothing to ask.
        # It answered, so the connection works: roll back and keep it.
        with contextlib.suppress(asyncpg.PostgresError, *CONNECTION_ERRORS):
            await transaction.rollback()
        raise
    except BaseException:
        # A broken connection, a timeout or a cancellation: a ROLLBACK could wait as long
        # again for a server that does not answer; closing the connection aborts just as well,
        # once the server notices. Until then the transaction may hold its locks: the next
        # call ends it.
        conn.terminate()
        attempt.orphan = opened
        raise
    attempt.xid, attempt.backend_pid, attempt.result = xid, pid, result
    await transaction.commit()  # if this fails, or is cancelled, the attempt stays unsettled
    attempt.clear()
    return result, False


async def _end_transaction(conn: Any, pid: int, xid: int, why: str) -> None:
    """Terminate backend `pid` if it still runs transaction `xid` (txid_current()'s value)."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        if await conn.fetchval(_TERMINATE, pid, xid):
            log.warning(
                "ended transaction %d left open on the server (backend %d): %s", xid, pid, why
            )
