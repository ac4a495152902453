"""API consumers in Postgres (`module_api_consumers`, migration 0005): create, list, update and
revoke for `modgate consumers`, the gateway's reads (lookup by hash, the set of active hashes)
and batched usage writes.

Strategy: proxy/store/keys.py's, for a second kind of credential. Only `key_prefix` and
`key_hash` of a key are written; the key leaves `create_consumer` once, in its return value.
Values are checked before any SQL by the rules every key source shares
(proxy/auth/key_fields.py) and refused with `InvalidKeyField`, whose `field` names the
parameter. Every write goes through the table's triggers, which NOTIFY `consumer:<hash>`;
`record_consumer_usage` touches only total_requests and last_request_at, which the trigger
ignores. `allowed_ips` is INET[]: sent and read as text[] so no codec matters. Postgres and
socket failures become StoreError.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from proxy.auth.api_keys import hash_key, key_prefix
from proxy.auth.consumer_keys import ConsumerRecord, generate_consumer_key
from proxy.auth.endpoints import EndpointRules
from proxy.auth.key_fields import (
    DEFAULT_ALLOWED_ENDPOINTS,
    DEFAULT_CONSUMER_SCOPES,
    DEFAULT_RATE_LIMIT_PER_DAY,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    InvalidKeyField,
    parse_consumer_scopes,
    parse_description,
    parse_endpoints,
    parse_name,
    parse_networks,
    parse_rate_limit,
    parse_uuid,
)
from proxy.auth.secret_box import SecretBox, generate_secret
from proxy.errors import StoreError
from proxy.retry import WriteAttempt
from proxy.routing.entity_routes import entity_routes
from proxy.store.credentials import row_fields, run, write_usage
from proxy.store.migrate import CONNECTION_ERRORS
from proxy.store.routes import load_modules

_RECORD_COLUMNS = """
id::text AS id, module_id::text AS module_id, site_id::text AS site_id, key_prefix, key_hash,
name, scopes, allowed_endpoints, rate_limit_per_minute, rate_limit_per_day,
allowed_ips::text[] AS allowed_ips, is_active, secret_ciphertext, require_signature
"""
# Never key_hash: a summary is what gets printed and serialized.
_SUMMARY_COLUMNS = """
id::text AS id, key_prefix, name, description, module_id::text AS module_id,
site_id::text AS site_id, site_module_id::text AS site_module_id, scopes, allowed_endpoints,
rate_limit_per_minute, rate_limit_per_day, allowed_ips::text[] AS allowed_ips, is_active,
secret_ciphertext IS NOT NULL AS has_secret, require_signature,
COALESCE(total_requests, 0) AS total_requests, last_request_at, created_at, updated_at
"""
_FETCH_ACTIVE = f"""
SELECT {_RECORD_COLUMNS} FROM module_api_consumers WHERE key_hash = $1 AND is_active = true
"""
_FETCH_ACTIVE_MANY = f"""
SELECT {_RECORD_COLUMNS} FROM module_api_consumers
WHERE key_hash = ANY($1::text[]) AND is_active = true
"""
_ACTIVE_HASHES = "SELECT key_hash FROM module_api_consumers WHERE is_active = true"
_INSERT = f"""
INSERT INTO module_api_consumers (
  id, module_id, site_id, key_prefix, key_hash, name, description, scopes, allowed_endpoints,
  rate_limit_per_minute, rate_limit_per_day, allowed_ips, secret_ciphertext, require_signature)
VALUES ($12::uuid, $1::uuid, $2::uuid, $3, $4, $5, $6, $7::text[], $8::text[], $9::int,
        $10::int, $11::text[]::inet[], $13::bytea, $14::bool)
RETURNING {_SUMMARY_COLUMNS}
"""
_SELECT_SUMMARIES = f"""
SELECT {_SUMMARY_COLUMNS} FROM module_api_consumers
WHERE ($1::uuid IS NULL OR module_id = $1::uuid)
  AND ($2::uuid IS NULL OR site_id = $2::uuid)
  AND ($3::bool OR is_active IS TRUE)
ORDER BY created_at DESC NULLS LAST, id DESC
"""
_REVOKE = f"""
UPDATE module_api_consumers SET is_active = false, updated_at = NOW()
WHERE id = $1::uuid AND is_active IS DISTINCT FROM false
RETURNING {_SUMMARY_COLUMNS}
"""
# NULL means "leave as is"; an empty array is not NULL, so it clears. description can be set
# to NULL, hence its own flag ($3).
_UPDATE = f"""
UPDATE module_api_consumers SET
  name = COALESCE($2, name),
  description = CASE WHEN $3::bool THEN $4 ELSE description END,
  scopes = COALESCE($5::text[], scopes),
  allowed_endpoints = COALESCE($6::text[], allowed_endpoints),
  rate_limit_per_minute = COALESCE($7::int, rate_limit_per_minute),
  rate_limit_per_day = COALESCE($8::int, rate_limit_per_day),
  allowed_ips = CASE WHEN $9::text[] IS NULL THEN allowed_ips ELSE $9::text[]::inet[] END,
  require_signature = COALESCE($10::bool, require_signature),
  updated_at = NOW()
WHERE id = $1::uuid
RETURNING {_SUMMARY_COLUMNS}
"""
_RECORD_USAGE = """
UPDATE module_api_consumers c
SET total_requests = COALESCE(c.total_requests, 0) + u.n,
    last_request_at = GREATEST(c.last_request_at, u.t)
FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS u(id, n, t)
WHERE c.id = u.id
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerSummary:
    """A consumer as listings show it: everything but the hash (the key is not stored)."""

    id: str
    key_prefix: str
    name: str
    description: str | None
    module_id: str
    site_id: str
    site_module_id: str | None
    scopes: tuple[str, ...]
    allowed_endpoints: tuple[str, ...]
    rate_limit_per_minute: int | None
    rate_limit_per_day: int | None
    allowed_ips: tuple[str, ...]
    is_active: bool
    has_secret: bool  # a signing secret is stored (encrypted; never shown again)
    require_signature: bool
    total_requests: int
    last_request_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


async def fetch_active_consumer(conn: Any, key_hash: str) -> ConsumerRecord | None:
    """The active consumer with this key hash, or None."""
    row = await run(conn.fetchrow(_FETCH_ACTIVE, key_hash), "look up an API consumer")
    return None if row is None else _record(row)


async def fetch_active_consumers(conn: Any, key_hashes: list[str]) -> dict[str, ConsumerRecord]:
    """`fetch_active_consumer` for many hashes in one query; inactive or unknown ones absent."""
    rows = await run(conn.fetch(_FETCH_ACTIVE_MANY, key_hashes), "look up API consumers")
    return {record.key_hash: record for record in map(_record, rows)}


async def load_active_consumer_hashes(conn: Any) -> list[str]:
    """key_hash of every active consumer, in one query."""
    rows = await run(conn.fetch(_ACTIVE_HASHES), "load API consumer hashes")
    return [row[0] for row in rows]


async def create_consumer(
    conn: Any,
    *,
    module_id: str,
    site_id: str,
    name: str,
    description: str | None = None,
    scopes: Iterable[str] = DEFAULT_CONSUMER_SCOPES,
    allowed_endpoints: Iterable[str] = DEFAULT_ALLOWED_ENDPOINTS,
    rate_limit_per_minute: int | None = DEFAULT_RATE_LIMIT_PER_MINUTE,
    rate_limit_per_day: int | None = DEFAULT_RATE_LIMIT_PER_DAY,
    allowed_ips: Iterable[str] = (),
    secrets: SecretBox | None = None,
    require_signature: bool = False,
) -> tuple[ConsumerSummary, str, str | None]:
    """Store a new consumer (key prefix and hash only); returns it, its key and, with
    `secrets` (the `secrets_key`), a signing secret stored sealed: both shown once.
    The module must exist (modgate_modules: `modgate routes apply` registers it)."""
    module = parse_uuid(module_id, "module_id")
    values = (
        parse_uuid(site_id, "site_id"),
        parse_name(name),
        parse_description(description),
        parse_consumer_scopes(scopes),
        await _routed_endpoints(conn, module, parse_endpoints(allowed_endpoints)),
        parse_rate_limit(rate_limit_per_minute, "rate_limit_per_minute"),
        parse_rate_limit(rate_limit_per_day, "rate_limit_per_day"),
        parse_networks(allowed_ips),
    )
    key = generate_consumer_key()
    # The id is made here: it is the sealed secret's associated data (secret_box.py).
    consumer_id = str(uuid.uuid4())
    secret = None if secrets is None else generate_secret()
    sealed = None if secrets is None or secret is None else secrets.seal(secret, consumer_id)
    site, name, description, *rest = values
    try:
        row = await conn.fetchrow(
            _INSERT, module, site, key_prefix(key), hash_key(key), name, description, *rest,
            consumer_id, sealed, require_signature,
        )  # fmt: skip
    except asyncpg.ForeignKeyViolationError:
        raise InvalidKeyField(
            "module_id", f"no module {module} (register it first: modgate routes apply)"
        ) from None
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        raise StoreError(f"cannot create an API consumer: {exc}") from exc
    return _summary(row), key, secret


async def get_consumer(conn: Any, consumer_id: str) -> ConsumerSummary | None:
    """One consumer by id, whatever its state."""
    query = f"SELECT {_SUMMARY_COLUMNS} FROM module_api_consumers WHERE id = $1::uuid"
    row = await run(
        conn.fetchrow(query, parse_uuid(consumer_id, "consumer_id")), "read an API consumer"
    )
    return None if row is None else _summary(row)


async def list_consumers(
    conn: Any,
    *,
    module_id: str | None = None,
    site_id: str | None = None,
    include_inactive: bool = False,
) -> list[ConsumerSummary]:
    """Consumers, newest first; revoked (inactive) ones only with include_inactive."""
    module = None if module_id is None else parse_uuid(module_id, "module_id")
    site = None if site_id is None else parse_uuid(site_id, "site_id")
    rows = await run(
        conn.fetch(_SELECT_SUMMARIES, module, site, include_inactive), "list API consumers"
    )
    return [_summary(row) for row in rows]


async def revoke_consumer(conn: Any, consumer_id: str) -> ConsumerSummary | None:
    """Deactivate; None when there is no such consumer or it is inactive already."""
    row = await run(
        conn.fetchrow(_REVOKE, parse_uuid(consumer_id, "consumer_id")), "revoke an API consumer"
    )
    return None if row is None else _summary(row)


_KEEP = object()


async def update_consumer(
    conn: Any,
    consumer_id: str,
    *,
    name: str | None = None,
    description: str | object | None = _KEEP,
    scopes: Iterable[str] | None = None,
    allowed_endpoints: Iterable[str] | None = None,
    rate_limit_per_minute: int | None = None,
    rate_limit_per_day: int | None = None,
    allowed_ips: Iterable[str] | None = None,
    require_signature: bool | None = None,
) -> ConsumerSummary | None:
    """Change only the given fields (None: unchanged; an empty list clears it; description
    None removes it); None when there is no such consumer. A revoked one stays revoked."""
    consumer = parse_uuid(consumer_id, "consumer_id")
    endpoints = None if allowed_endpoints is None else parse_endpoints(allowed_endpoints)
    args = (
        consumer,
        None if name is None else parse_name(name),
        description is not _KEEP,
        None if description is _KEEP else parse_description(description),
        None if scopes is None else parse_consumer_scopes(scopes),
        endpoints,
        parse_rate_limit(rate_limit_per_minute, "rate_limit_per_minute"),
        parse_rate_limit(rate_limit_per_day, "rate_limit_per_day"),
        None if allowed_ips is None else parse_networks(allowed_ips),
        require_signature,
    )
    if require_signature:
        # Requiring a signature of a consumer without a secret would lock it out for good.
        sealed = await run(conn.fetchrow(_SECRET_OF, consumer), "read an API consumer")
        if sealed is None:
            return None
        if not sealed[0]:
            raise InvalidKeyField(
                "require_signature",
                "this consumer has no secret to sign with (a consumer gets one when it is "
                "created with --with-secret)",
            )
    if endpoints is not None:
        module = await run(conn.fetchval(_MODULE_OF, consumer), "read an API consumer")
        if module is None:
            return None
        await _routed_endpoints(conn, module, endpoints)
    row = await run(conn.fetchrow(_UPDATE, *args), "update an API consumer")
    return None if row is None else _summary(row)


async def record_consumer_usage(
    conn: Any,
    usage: Mapping[str, tuple[int, datetime]],
    attempt: WriteAttempt[None] | None = None,
) -> None:
    """Add request counts and advance last_request_at for a batch of consumers, in one
    statement run by `write_usage` (pass the same `attempt` to every retry of one batch)."""
    await write_usage(conn, _RECORD_USAGE, usage, attempt, "record API consumer usage")


# -- allowed endpoints against the module's routes ------------------------------------------

_MODULE_OF = "SELECT module_id::text FROM module_api_consumers WHERE id = $1::uuid"
_SECRET_OF = "SELECT secret_ciphertext IS NOT NULL FROM module_api_consumers WHERE id = $1::uuid"
_ROUTES_SHOWN = 5  # how many of the module's routes a refusal lists


async def _routed_endpoints(
    conn: Any, module_id: str, endpoints: tuple[str, ...]
) -> tuple[str, ...]:
    """`endpoints`, once each is found to name at least one of the module's active routes
    (hand-registered rows and the routes its entities generate), as the gateway will check it
    (proxy/auth/endpoints.py); InvalidKeyField for the first that names none. An endpoint that
    matches nothing would lock the consumer out with nothing to say why. A module without a
    modgate_modules row or routes is left to the insert (its foreign key names it)."""
    if all(endpoint == "*" for endpoint in endpoints):
        return endpoints
    modules = await load_modules(conn, [module_id])
    if not modules:
        return endpoints
    [module] = modules
    routes = [(route.method, route.path) for route in module.routes]
    routes += [
        (generated.spec.method, generated.spec.path)
        for entity in module.entities
        for generated in entity_routes(entity)
    ]
    for endpoint in endpoints:
        rules = EndpointRules((endpoint,))
        if any(rules.allows(method, path) for method, path in routes):
            continue
        if not routes:
            raise InvalidKeyField(
                "allowed_endpoints",
                f"{endpoint!r} matches no route: module {module_id} has no routes "
                "(register them first: modgate routes apply)",
            )
        shown = sorted({f"{method} {path}" for method, path in routes})
        more = f", ... ({len(shown)} in all)" if len(shown) > _ROUTES_SHOWN else ""
        hint = (
            "; a last segment * names a route whose own path ends in *, not every path below"
            if endpoint.endswith("/*")
            else ""
        )
        raise InvalidKeyField(
            "allowed_endpoints",
            f"{endpoint!r} matches no route of module {module_id}{hint} "
            f"(its routes: {', '.join(shown[:_ROUTES_SHOWN])}{more})",
        )
    return endpoints


# -- rows -----------------------------------------------------------------------------------


# NULL arrays read as empty tuples: a NULL allowed_endpoints allows nothing.
_ARRAYS = ("scopes", "allowed_endpoints", "allowed_ips")


def _record(row: Any) -> ConsumerRecord:
    return ConsumerRecord(**row_fields(row, _ARRAYS))


def _summary(row: Any) -> ConsumerSummary:
    return ConsumerSummary(**row_fields(row, _ARRAYS))
