"""What the stores of module API keys (proxy/store/keys.py) and API consumers
(proxy/store/consumers.py) share: Postgres failures as StoreError, rows read as dataclass
fields, and batched usage counts written once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import asyncpg

from proxy.auth.key_fields import InvalidKeyField, parse_uuid
from proxy.errors import StoreError
from proxy.retry import WriteAttempt
from proxy.store.commit import write_once
from proxy.store.migrate import CONNECTION_ERRORS


async def run(awaitable: Any, action: str) -> Any:
    """Await a query; Postgres and socket failures become `StoreError("cannot <action>: ...")`."""
    try:
        return await awaitable
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        raise StoreError(f"cannot {action}: {exc}") from exc


def row_fields(row: Any, arrays: Iterable[str]) -> dict[str, Any]:
    """A row as dataclass fields: the `arrays` columns become tuples (NULL: empty); NULL
    is_active is not active, so a hand-written row never loosens anything."""
    fields = dict(row)
    for name in arrays:
        fields[name] = tuple(fields[name] or ())
    fields["is_active"] = fields["is_active"] is True
    return fields


async def write_usage(
    conn: Any,
    statement: str,
    usage: Mapping[str, tuple[int, datetime]],
    attempt: WriteAttempt[None] | None,
    action: str,
    *,
    most: int | None = None,
) -> None:
    """Run `statement` ($1 ids, $2 counts, $3 last-use times) once for a batch of usage.

    Ids that are not UUIDs cannot exist and are skipped; spellings of one UUID are merged.
    Negative counts count as 0, and counts above `most` (if given) as `most`. The statement
    runs in a transaction (proxy/store/commit.py): pass the same `attempt` to every retry of
    one batch, and counts whose earlier COMMIT went unanswered are never added twice.
    """
    merged: dict[str, tuple[int, datetime]] = {}
    for raw_id, (count, used_at) in usage.items():
        try:
            row_id = parse_uuid(raw_id, "id")
        except InvalidKeyField:
            continue
        if row_id in merged:
            old_count, old_at = merged[row_id]
            count, used_at = old_count + count, max(old_at, used_at)
        merged[row_id] = (count, used_at)
    if not merged:
        return
    ids = list(merged)
    counts = [max(n, 0) if most is None else min(max(n, 0), most) for n, _ in merged.values()]
    times = [t for _, t in merged.values()]

    async def update(c: Any) -> None:
        await c.execute(statement, ids, counts, times)

    attempt = attempt if attempt is not None else WriteAttempt()
    await run(write_once(conn, attempt, update), action)
