"""Writes that a retry never applies twice: a lost COMMIT answer is asked about, not guessed.

A transaction makes a batch all or nothing, which settles every failure but one: the
connection breaks after COMMIT was sent. The server may have committed (and the answer was
lost) or not (COMMIT never arrived); writing the batch again could store it twice.

Strategy: `write_once` runs the work in a transaction that first reads its own transaction id
(`txid_current()`) and backend pid. Only while COMMIT is in flight does the `WriteAttempt`
remember them; a failure anywhere before COMMIT was sent leaves nothing to remember, since the
server never commits a transaction whose COMMIT it did not receive. The next call with the same
attempt asks `txid_status(xid)` first:
- committed: the earlier call wrote it; its result is returned and nothing is written again;
- aborted (or unknown: an xid older than the server still tracks): written again;
- in progress: the old session still holds the transaction open (a partition: the server did
  not see the connection die). Its backend is terminated (allowed for one's own role) and the
  call fails with StoreError; the retry after that finds it aborted or committed. Besides,
  `idle_in_transaction_session_timeout` is set on the transaction, so the server ends an
  orphan by itself within IDLE_IN_TRANSACTION_MS even where terminating is not allowed.

Postgres and socket failures propagate as they are: callers translate them to StoreError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, cast

import asyncpg

from proxy.errors import StoreError
from proxy.retry import WriteAttempt
from proxy.store.migrate import CONNECTION_ERRORS

T = TypeVar("T")

# Long enough for any COPY of a batch to finish; short enough that an orphaned transaction
# (and the FOR KEY SHARE locks of proxy/store/logs.py) does not outlive a short outage by much.
IDLE_IN_TRANSACTION_MS: Final = 30_000

_BEGIN = (
    "SELECT txid_current(), pg_backend_pid(),"
    " set_config('idle_in_transaction_session_timeout', $1, true)"
)
_STATUS = "SELECT txid_status($1)"
_TERMINATE = "SELECT pg_terminate_backend($1)"


async def write_once(
    conn: Any, attempt: WriteAttempt[T], work: Callable[[Any], Awaitable[T]]
) -> tuple[T, bool]:
    """Run `work(conn)` in a transaction unless an earlier call with `attempt` committed it.

    Returns (result, already): `already` is True when an earlier call's commit is what
    counts, and `result` is then that call's. Use a connection outside any transaction.
    """
    if attempt.xid is not None:
        status = await conn.fetchval(_STATUS, attempt.xid)
        if status == "committed":
            result = cast(T, attempt.result)  # set together with xid
            attempt.clear()
            return result, True
        if status == "in progress":
            with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(_TERMINATE, attempt.backend_pid)
            raise StoreError(
                f"an earlier write (transaction {attempt.xid}) is still open on the server; "
                "its session was asked to end, retrying later"
            )
        attempt.clear()  # aborted, or too old to tell (NULL): it was not written
    transaction = conn.transaction()
    await transaction.start()
    try:
        xid, pid, _ = await conn.fetchrow(_BEGIN, str(IDLE_IN_TRANSACTION_MS))
        result = await work(conn)
    except asyncpg.PostgresError:
        # COMMIT was never sent: the server cannot have committed, there is nothing to ask.
        # It answered, so the connection works: roll back and keep it.
        with contextlib.suppress(asyncpg.PostgresError, *CONNECTION_ERRORS):
            await transaction.rollback()
        raise
    except BaseException:
        # A broken connection, a timeout or a cancellation: a ROLLBACK could wait as long
        # again for a server that does not answer; closing the connection aborts just as well.
        conn.terminate()
        raise
    attempt.xid, attempt.backend_pid, attempt.result = xid, pid, result
    await transaction.commit()  # if this fails, or is cancelled, the attempt stays unsettled
    attempt.clear()
    return result, False
