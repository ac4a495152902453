"""API keys in Postgres: the seed's createApiKey / listApiKeys / revokeApiKey / updateApiKey,
plus the gateway's reads (lookup by hash, the set of known hashes) and batched usage writes.

Strategy: only `key_prefix` and `key_hash` of a key are ever written; the plaintext leaves
`create_key` once, in its return value. UUIDs are selected as `::text` (canonical lowercase)
and sent as text cast in SQL, as in routes.py, so no connection codec matters. Every write
goes through the table's triggers, which NOTIFY `key:<hash>` so gateways drop the cached key;
`record_usage` touches only last_used_at and request_count, which the trigger ignores, so
usage flushes never empty a gateway's cache.

Validation happens before any SQL, by the rules every key source shares
(proxy/auth/key_fields.py), and raises `InvalidKeyField`, whose `field` names the parameter
(the CLI turns it into the flag's name). Postgres and socket failures become StoreError.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from proxy.auth.api_keys import ApiKeyRecord, generate_key, hash_key, key_prefix
from proxy.auth.key_fields import (
    DEFAULT_RATE_LIMIT_PER_DAY,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    INT4_MAX,
    MAX_EXPIRES_IN_DAYS,
    InvalidKeyField,
    parse_name,
    parse_networks,
    parse_origins,
    parse_rate_limit,
    parse_scopes,
    parse_uuid,
    parse_whole_number,
)
from proxy.retry import WriteAttempt
from proxy.store.credentials import row_fields, run, write_usage

_RECORD_COLUMNS = """
id::text AS id, module_id::text AS module_id, site_id::text AS site_id,
agency_id::text AS agency_id, key_prefix, key_hash, name, scopes, rate_limit_per_minute,
rate_limit_per_day, allowed_ips, allowed_origins, is_active, expires_at, revoked_at
"""
# Never key_hash: a summary is what gets printed and serialized.
_SUMMARY_COLUMNS = """
id::text AS id, key_prefix, name, module_id::text AS module_id, site_id::text AS site_id,
agency_id::text AS agency_id, scopes, rate_limit_per_minute, rate_limit_per_day, allowed_ips,
allowed_origins, is_active, revoked_at, expires_at, last_used_at,
COALESCE(request_count, 0) AS request_count, created_at
"""

# `is_active = true` verbatim so the planner uses the seed's partial index idx_api_keys_hash.
_FETCH_ACTIVE = f"""
SELECT {_RECORD_COLUMNS} FROM module_api_keys
WHERE key_hash = $1 AND is_active = true
ORDER BY created_at DESC NULLS LAST, id DESC LIMIT 1
"""
# The newest active row of each hash, for many hashes at once (a full reload's cache refresh).
_FETCH_ACTIVE_MANY = f"""
SELECT DISTINCT ON (key_hash) {_RECORD_COLUMNS} FROM module_api_keys
WHERE key_hash = ANY($1::text[]) AND is_active = true
ORDER BY key_hash, created_at DESC NULLS LAST, id DESC
"""
# Plain rows: ~45 ms for 100k keys (measured); one array_agg value was no faster.
_ACTIVE_HASHES = (
    "SELECT key_hash FROM module_api_keys WHERE is_active = true AND revoked_at IS NULL"
)
_INSERT = f"""
INSERT INTO module_api_keys (
  module_id, site_id, agency_id, key_prefix, key_hash, name, scopes, rate_limit_per_minute,
  rate_limit_per_day, allowed_ips, allowed_origins, expires_at, created_by)
VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5, $6, $7::text[], $8::int, $9::int, $10::text[],
        $11::text[], NOW() + make_interval(days => $12::int), $13::uuid)
RETURNING {_RECORD_COLUMNS}
"""
_SELECT_SUMMARIES = f"""
SELECT {_SUMMARY_COLUMNS} FROM module_api_keys
WHERE ($1::uuid IS NULL OR module_id = $1::uuid)
  AND ($2::uuid IS NULL OR site_id = $2::uuid)
  AND ($3::bool OR revoked_at IS NULL)
ORDER BY created_at DESC NULLS LAST, id DESC
"""
_SELECT_SUMMARY = f"SELECT {_SUMMARY_COLUMNS} FROM module_api_keys WHERE id = $1::uuid"
# Already revoked: untouched (the first revocation's time and author stay on record).
_REVOKE = """
UPDATE module_api_keys SET is_active = false, revoked_at = NOW(), revoked_by = $2::uuid
WHERE id = $1::uuid AND revoked_at IS NULL
"""
# NULL means "leave as is"; an empty array is not NULL, so it clears. expires_at can be set to
# NULL, hence its own flag ($8).
_UPDATE = f"""
UPDATE module_api_keys SET
  name = COALESCE($2, name),
  scopes = COALESCE($3::text[], scopes),
  rate_limit_per_minute = COALESCE($4::int, rate_limit_per_minute),
  rate_limit_per_day = COALESCE($5::int, rate_limit_per_day),
  allowed_ips = COALESCE($6::text[], allowed_ips),
  allowed_origins = COALESCE($7::text[], allowed_origins),
  expires_at = CASE WHEN $8::bool THEN $9::timestamptz ELSE expires_at END
WHERE id = $1::uuid
RETURNING {_RECORD_COLUMNS}
"""
# The counter is INTEGER (the seed's): saturate instead of failing the whole batch.
_RECORD_USAGE = f"""
UPDATE module_api_keys k
SET request_count = LEAST(COALESCE(k.request_count, 0)::bigint + u.n, {INT4_MAX}),
    last_used_at = GREATEST(k.last_used_at, u.t)
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS u(id, n, t)
WHERE k.id = u.id
"""


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
"""`update_key(expires_at=UNSET)` leaves the expiry alone; None removes it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySummary:
    """A key as listings show it: everything but the hash (and the key, which is not stored)."""

    id: str
    key_prefix: str
    name: str
    module_id: str
    site_id: str
    agency_id: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None
    rate_limit_per_day: int | None
    allowed_ips: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    is_active: bool
    revoked_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    request_count: int
    created_at: datetime | None

    def status(self, now: datetime) -> str:
        """'revoked', 'inactive', 'expired' or 'active' at `now` (an aware datetime)."""
        if self.revoked_at is not None:
            return "revoked"
        if not self.is_active:
            return "inactive"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


async def fetch_active_key(conn: Any, key_hash: str) -> ApiKeyRecord | None:
    """The active row with this hash (the newest if several), revoked or expired or not."""
    row = await run(conn.fetchrow(_FETCH_ACTIVE, key_hash), "look up an API key")
    return None if row is None else _record(row)


async def fetch_active_keys(conn: Any, key_hashes: list[str]) -> dict[str, ApiKeyRecord]:
    """`fetch_active_key` for many hashes in one query; hashes with no active row are absent."""
    rows = await run(conn.fetch(_FETCH_ACTIVE_MANY, key_hashes), "look up API keys")
    return {record.key_hash: record for record in map(_record, rows)}


async def load_active_key_hashes(conn: Any) -> list[str]:
    """key_hash of every active, unrevoked key, in one query."""
    rows = await run(conn.fetch(_ACTIVE_HASHES), "load API key hashes")
    return [row[0] for row in rows]


async def create_key(
    conn: Any,
    *,
    module_id: str,
    site_id: str,
    agency_id: str,
    name: str,
    scopes: Iterable[str] = (),
    expires_in_days: int | None = None,
    rate_limit_per_minute: int | None = DEFAULT_RATE_LIMIT_PER_MINUTE,
    rate_limit_per_day: int | None = DEFAULT_RATE_LIMIT_PER_DAY,
    allowed_ips: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    created_by: str | None = None,
) -> tuple[ApiKeyRecord, str]:
    """Store a new key (prefix and hash only); returns the record and the key, shown once.

    Without scopes the key may call only routes that require none (the seed defaults to '*').
    """
    args = (
        parse_uuid(module_id, "module_id"),
        parse_uuid(site_id, "site_id"),
        parse_uuid(agency_id, "agency_id"),
    )
    values = (
        parse_name(name),
        parse_scopes(scopes),
        parse_rate_limit(rate_limit_per_minute, "rate_limit_per_minute"),
        parse_rate_limit(rate_limit_per_day, "rate_limit_per_day"),
        parse_networks(allowed_ips),
        parse_origins(allowed_origins),
        parse_whole_number(expires_in_days, "expires_in_days", MAX_EXPIRES_IN_DAYS),
        None if created_by is None else parse_uuid(created_by, "created_by"),
    )
    key = generate_key()
    row = await run(
        conn.fetchrow(_INSERT, *args, key_prefix(key), hash_key(key), *values),
        "create an API key",
    )
    return _record(row), key


async def get_key(conn: Any, key_id: str) -> KeySummary | None:
    """One key's summary by id, whatever its state."""
    row = await run(conn.fetchrow(_SELECT_SUMMARY, parse_uuid(key_id, "key_id")), "read an API key")
    return None if row is None else _summary(row)


async def list_keys(
    conn: Any,
    *,
    module_id: str | None = None,
    site_id: str | None = None,
    include_revoked: bool = False,
) -> list[KeySummary]:
    """Keys, newest first; revoked ones only with include_revoked (the seed hides them)."""
    module = None if module_id is None else parse_uuid(module_id, "module_id")
    site = None if site_id is None else parse_uuid(site_id, "site_id")
    rows = await run(conn.fetch(_SELECT_SUMMARIES, module, site, include_revoked), "list API keys")
    return [_summary(row) for row in rows]


async def revoke_key(conn: Any, key_id: str, *, revoked_by: str | None = None) -> bool:
    """Deactivate and mark revoked; False when there is no such key or it is already revoked
    (then it is left untouched). An inactive but unrevoked key is revoked."""
    by = None if revoked_by is None else parse_uuid(revoked_by, "revoked_by")
    status = await run(conn.execute(_REVOKE, parse_uuid(key_id, "key_id"), by), "revoke an API key")
    return bool(status == "UPDATE 1")


async def update_key(
    conn: Any,
    key_id: str,
    *,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    rate_limit_per_minute: int | None = None,
    rate_limit_per_day: int | None = None,
    allowed_ips: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    expires_at: datetime | _Unset | None = UNSET,
) -> ApiKeyRecord | None:
    """Change only the given fields (None: unchanged; an empty list clears it); None when
    there is no such key. Revoked keys can be edited but stay revoked."""
    if isinstance(expires_at, datetime) and expires_at.tzinfo is None:
        raise InvalidKeyField("expires_at", "expected an aware datetime (with a time zone)")
    args = (
        parse_uuid(key_id, "key_id"),
        None if name is None else parse_name(name),
        None if scopes is None else parse_scopes(scopes),
        parse_rate_limit(rate_limit_per_minute, "rate_limit_per_minute"),
        parse_rate_limit(rate_limit_per_day, "rate_limit_per_day"),
        None if allowed_ips is None else parse_networks(allowed_ips),
        None if allowed_origins is None else parse_origins(allowed_origins),
        not isinstance(expires_at, _Unset),
        None if isinstance(expires_at, _Unset) else expires_at,
    )
    row = await run(conn.fetchrow(_UPDATE, *args), "update an API key")
    return None if row is None else _record(row)


async def record_usage(
    conn: Any,
    usage: Mapping[str, tuple[int, datetime]],
    attempt: WriteAttempt[None] | None = None,
) -> None:
    """Add request counts and advance last_used_at for a batch of keys, in one statement run
    by `write_usage` (pass the same `attempt` to every retry of one batch). The counter is
    INTEGER: a count saturates at INT4_MAX."""
    await write_usage(conn, _RECORD_USAGE, usage, attempt, "record API key usage", most=INT4_MAX)


# -- rows -----------------------------------------------------------------------------------


# NULL arrays read as empty tuples.
_ARRAYS = ("scopes", "allowed_ips", "allowed_origins")


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(**row_fields(row, _ARRAYS))


def _summary(row: Any) -> KeySummary:
    return KeySummary(**row_fields(row, _ARRAYS))
