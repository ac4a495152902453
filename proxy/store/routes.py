"""Routes in Postgres: read the active routes as ModuleSpecs, write a manifest's modules.

Strategy for types: both directions go through text so that neither depends on codecs the
caller may have registered on its connection: UUIDs are selected as `::text` (canonical
lowercase), JSONB as `::text` and decoded with orjson, and JSON values are sent as text and
cast in SQL. TEXT[] columns arrive as lists and become tuples.

Strategy for writes: `apply_manifest` sends the same few statements whatever the manifest's
size (modules, routes, entities: proxy/store/entities.py, which also checks the entities'
tables first), each fed by `unnest` over parallel arrays, in one transaction. Upserts skip
rows whose values already match (`... DO UPDATE ... WHERE (old) IS DISTINCT FROM (new)`), so
re-applying an unchanged manifest writes nothing and wakes no gateway.

Nullable seed columns read as the seed's defaults when NULL (requires_auth true, no scopes,
cache_ttl_seconds 0): a row the platform wrote by hand never loosens authentication.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson

from proxy.auth.key_fields import canonical_uuid
from proxy.errors import ManifestError, StoreError
from proxy.interning import interned
from proxy.routing.manifest import Manifest
from proxy.routing.model import ModuleSpec, RouteSpec
from proxy.store.entities import (
    DELETE_MISSING_ENTITIES,
    SELECT_ALL_ENTITIES,
    SELECT_SOME_ENTITIES,
    UPSERT_ENTITIES,
    check_entity_tables,
    entities_from_rows,
    entity_columns,
)
from proxy.store.migrate import CONNECTION_ERRORS

_SERVED_COLUMNS = """
module_id::text AS module_id, id::text AS id, path, method, handler_type, handler_code,
handler_url, requires_auth, required_scopes, rate_limit_per_minute, cache_ttl_seconds,
forward_credentials, encoded_slashes
"""
# Documentation: no request reads it, and a worker would hold it for every route (~180 MiB for
# bench/memory_bench.py's 100k routes, each with a summary, a description and small schemas).
# Read with `docs=True`, per module, by whatever documents the routes (the OpenAPI document).
_DOC_COLUMNS = """,
summary, description, request_schema::text AS request_schema,
response_schema::text AS response_schema
"""
_ACTIVE = " FROM module_api_routes WHERE is_active = true"
_SOME = " AND module_id = ANY($1::uuid[])"
# COLLATE "C": the same order on every server whatever its locale, and the same as Python's.
_ROUTE_ORDER = ' ORDER BY module_id, path COLLATE "C", method COLLATE "C"'
_SELECT_ALL_MODULES = "SELECT id::text AS id, name, upstream FROM modgate_modules"
_SELECT_SOME_MODULES = _SELECT_ALL_MODULES + " WHERE id = ANY($1::uuid[])"

_UPSERT_MODULES = """
INSERT INTO modgate_modules AS m (id, name, upstream, updated_at)
SELECT u.id, u.name, u.upstream, NOW()
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, name, upstream)
ON CONFLICT (id) DO UPDATE
SET name = EXCLUDED.name, upstream = EXCLUDED.upstream, updated_at = NOW()
WHERE (m.name, m.upstream) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.upstream)
"""

# Scopes travel as one JSON array per route: unnest would flatten a TEXT[][] (and Postgres
# arrays cannot be ragged anyway).
_UPSERT_ROUTES = """
INSERT INTO module_api_routes AS r (
  module_id, path, method, handler_type, handler_code, handler_url, requires_auth,
  required_scopes, rate_limit_per_minute, cache_ttl_seconds, summary, description,
  request_schema, response_schema, forward_credentials, encoded_slashes, is_active, updated_at)
SELECT u.module_id, u.path, u.method, u.handler_type, u.handler_code, u.handler_url,
       u.requires_auth, ARRAY(SELECT jsonb_array_elements_text(u.scopes::jsonb)),
       u.rate_limit_per_minute, u.cache_ttl_seconds, u.summary, u.description,
       u.request_schema::jsonb, u.response_schema::jsonb, u.forward_credentials,
       u.encoded_slashes, true, NOW()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bool[], $8::text[], $9::int[], $10::int[], $11::text[], $12::text[],
            $13::text[], $14::text[], $15::bool[], $16::text[])
  AS u(module_id, path, method, handler_type, handler_code, handler_url, requires_auth,
       scopes, rate_limit_per_minute, cache_ttl_seconds, summary, description,
       request_schema, response_schema, forward_credentials, encoded_slashes)
ON CONFLICT (module_id, path, method) DO UPDATE SET
  handler_type = EXCLUDED.handler_type, handler_code = EXCLUDED.handler_code,
  handler_url = EXCLUDED.handler_url, requires_auth = EXCLUDED.requires_auth,
  required_scopes = EXCLUDED.required_scopes,
  rate_limit_per_minute = EXCLUDED.rate_limit_per_minute,
  cache_ttl_seconds = EXCLUDED.cache_ttl_seconds, summary = EXCLUDED.summary,
  description = EXCLUDED.description, request_schema = EXCLUDED.request_schema,
  response_schema = EXCLUDED.response_schema,
  forward_credentials = EXCLUDED.forward_credentials,
  encoded_slashes = EXCLUDED.encoded_slashes, is_active = true, updated_at = NOW()
WHERE (r.handler_type, r.handler_code, r.handler_url, r.requires_auth, r.required_scopes,
       r.rate_limit_per_minute, r.cache_ttl_seconds, r.summary, r.description,
       r.request_schema, r.response_schema, r.forward_credentials, r.encoded_slashes,
       r.is_active)
  IS DISTINCT FROM
      (EXCLUDED.handler_type, EXCLUDED.handler_code, EXCLUDED.handler_url,
       EXCLUDED.requires_auth, EXCLUDED.required_scopes, EXCLUDED.rate_limit_per_minute,
       EXCLUDED.cache_ttl_seconds, EXCLUDED.summary, EXCLUDED.description,
       EXCLUDED.request_schema, EXCLUDED.response_schema, EXCLUDED.forward_credentials,
       EXCLUDED.encoded_slashes, true)
RETURNING module_id::text
"""

# Rows are deactivated, never deleted: logs point at them and a later apply revives them.
_DEACTIVATE_MISSING = """
UPDATE module_api_routes AS r SET is_active = false, updated_at = NOW()
WHERE r.module_id = ANY($1::uuid[]) AND r.is_active = true
  AND NOT EXISTS (
    SELECT 1 FROM unnest($2::uuid[], $3::text[], $4::text[]) AS k(module_id, path, method)
    WHERE k.module_id = r.module_id AND k.path = r.path AND k.method = r.method)
RETURNING module_id::text
"""

_DUPLICATE_KEY_RE = re.compile(r"Key \(name\)=\((?P<name>.*)\) already exists")


@dataclass(frozen=True, slots=True)
class ModuleApplyResult:
    """What `apply_manifest` changed for one module.

    `upserted` counts routes inserted, changed or reactivated (0 when they already matched);
    `deactivated` counts active routes missing from the manifest, now inactive;
    `entities_upserted` and `entities_removed` count its entities written and deleted.
    """

    module_id: str
    upserted: int
    deactivated: int
    entities_upserted: int = 0
    entities_removed: int = 0


async def load_modules(
    conn: Any, module_ids: Collection[str] | None = None, *, docs: bool = False
) -> list[ModuleSpec]:
    """Active routes, entities and modgate_modules rows as ModuleSpecs, ordered by module id.

    With `module_ids`, only those modules; an id that has neither a modgate_modules row nor an
    active route yields no entry, which tells the caller to drop the module. The routes'
    summary, description and schemas are read only with `docs` (None otherwise).
    """
    args: tuple[Any, ...] = ()
    columns = _SERVED_COLUMNS + _DOC_COLUMNS if docs else _SERVED_COLUMNS
    where, module_sql, entity_sql = _ACTIVE, _SELECT_ALL_MODULES, SELECT_ALL_ENTITIES
    if module_ids is not None:
        wanted = _valid_uuids(module_ids)
        if not wanted:
            return []
        args = (wanted,)
        where, module_sql, entity_sql = _ACTIVE + _SOME, _SELECT_SOME_MODULES, SELECT_SOME_ENTITIES
    queries = ("SELECT" + columns + where + _ROUTE_ORDER, module_sql, entity_sql)
    try:
        if conn.is_in_transaction():
            # The caller's transaction decides isolation; asyncpg refuses a nested different one.
            route_rows, module_rows, entity_rows = await _fetch_all(conn, queries, args)
        else:
            # One snapshot for every query, so a module is never half old, half new.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                route_rows, module_rows, entity_rows = await _fetch_all(conn, queries, args)
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        raise StoreError(f"cannot load routes from Postgres: {exc}") from exc
    entities = entities_from_rows(entity_rows)

    routes: dict[str, list[RouteSpec]] = {}
    for row in route_rows:
        routes.setdefault(row["module_id"], []).append(_route_from_row(row, docs))
    meta: dict[str, tuple[str | None, str | None]] = {
        row["id"]: (row["name"], row["upstream"]) for row in module_rows
    }
    modules: list[ModuleSpec] = []
    for module_id in sorted(meta.keys() | routes.keys()):
        name, upstream = meta.get(module_id, (None, None))
        modules.append(
            ModuleSpec(
                id=module_id,
                name=name,
                upstream=upstream,
                routes=tuple(routes.get(module_id, ())),
                entities=tuple(entities.get(module_id, ())),
            )
        )
    return modules


async def apply_manifest(conn: Any, manifest: Manifest) -> list[ModuleApplyResult]:
    """Write the manifest's modules, routes and entities in one transaction (the seed's
    registerModuleRoutes: upsert, deactivate what is missing; entities no longer listed are
    deleted); other modules are untouched. ManifestError, before anything is written, when an
    entity's table or fields are not in the database."""
    modules = manifest.modules
    if not modules:
        return []
    module_ids = [m.id for m in modules]
    names, upstreams = [m.name for m in modules], [m.upstream for m in modules]
    columns = _route_columns(modules)
    try:
        async with conn.transaction():
            # Entities as stored: completed with their tables' created_at/updated_at.
            entities = entity_columns(await check_entity_tables(conn, modules))
            await conn.execute(_UPSERT_MODULES, module_ids, names, upstreams)
            upserted = Counter(row[0] for row in await conn.fetch(_UPSERT_ROUTES, *columns))
            deactivated = Counter(
                row[0]
                for row in await conn.fetch(
                    _DEACTIVATE_MISSING, module_ids, columns[0], columns[1], columns[2]
                )
            )
            entities_upserted = Counter(
                row[0] for row in await conn.fetch(UPSERT_ENTITIES, *entities)
            )
            entities_removed = Counter(
                row[0]
                for row in await conn.fetch(
                    DELETE_MISSING_ENTITIES, module_ids, entities[0], entities[1]
                )
            )
    except asyncpg.UniqueViolationError as exc:
        if exc.table_name != "modgate_modules":
            raise StoreError(f"cannot apply the manifest: {exc}") from exc
        match = _DUPLICATE_KEY_RE.search(exc.detail or "")
        name = match.group("name") if match else "?"
        owner = await _module_named(conn, name)
        by = f" by module {owner}" if owner else ""
        raise StoreError(
            f"module name {name!r} is already used{by}; rename or remove that module first"
        ) from exc
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        raise StoreError(f"cannot apply the manifest: {exc}") from exc
    return [
        ModuleApplyResult(i, upserted[i], deactivated[i], entities_upserted[i], entities_removed[i])
        for i in module_ids
    ]


async def _fetch_all(
    conn: Any, queries: tuple[str, str, str], args: tuple[Any, ...]
) -> tuple[list[Any], list[Any], list[Any]]:
    """The rows of the route, module and entity queries, in that order."""
    route_sql, module_sql, entity_sql = queries
    route_rows: list[Any] = await conn.fetch(route_sql, *args)
    module_rows: list[Any] = await conn.fetch(module_sql, *args)
    entity_rows: list[Any] = await conn.fetch(entity_sql, *args)
    return route_rows, module_rows, entity_rows


def _route_from_row(row: Any, docs: bool) -> RouteSpec:
    """A route row as a RouteSpec, one object per value many routes repeat (`interned`)."""
    route = RouteSpec(
        id=row["id"],
        path=row["path"],
        method=interned(row["method"]),
        handler_type=interned(row["handler_type"]),
        handler_code=row["handler_code"],
        handler_url=row["handler_url"],
        requires_auth=row["requires_auth"] is not False,
        required_scopes=interned(tuple(row["required_scopes"] or ())),
        rate_limit_per_minute=row["rate_limit_per_minute"],
        cache_ttl_seconds=row["cache_ttl_seconds"] or 0,
        forward_credentials=bool(row["forward_credentials"]),
        encoded_slashes=interned(row["encoded_slashes"]),
    )
    if not docs:
        return route
    request_schema, response_schema = row["request_schema"], row["response_schema"]
    return replace(
        route,
        summary=row["summary"],
        description=row["description"],
        request_schema=None if request_schema is None else orjson.loads(request_schema),
        response_schema=None if response_schema is None else orjson.loads(response_schema),
    )


def _route_columns(modules: Sequence[ModuleSpec]) -> list[list[Any]]:
    """The manifest's routes as parallel column arrays, in _UPSERT_ROUTES' parameter order."""
    columns: list[list[Any]] = [[] for _ in range(16)]
    seen: set[tuple[str, str, str]] = set()
    for module in modules:
        for route in module.routes:
            key = (module.id, route.path, route.method)
            if key in seen:
                # Caught here: Postgres would only say "cannot affect row a second time".
                raise ManifestError(
                    f"module {module.id}: route {route.method} {route.path} is listed twice"
                )
            seen.add(key)
            where = f"module {module.id}: route {route.method} {route.path}"
            values = (
                module.id,
                route.path,
                route.method,
                route.handler_type,
                route.handler_code,
                route.handler_url,
                route.requires_auth,
                _json(list(route.required_scopes), where),
                route.rate_limit_per_minute,
                route.cache_ttl_seconds,
                route.summary,
                route.description,
                _json(route.request_schema, where),
                _json(route.response_schema, where),
                route.forward_credentials,
                route.encoded_slashes,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
    return columns


def _json(value: Any, where: str) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:
        raise ManifestError(f"{where}: not representable as JSON: {exc}") from None


def _valid_uuids(ids: Collection[str]) -> list[str]:
    """Ids that can exist as UUIDs; anything else simply has no rows (and no entry)."""
    return [normal for module_id in ids if (normal := canonical_uuid(module_id)) is not None]


async def _module_named(conn: Any, name: str) -> str | None:
    """The id of the module holding `name`, for the error message; None if it cannot be told."""
    try:
        owner: str | None = await conn.fetchval(
            "SELECT id::text FROM modgate_modules WHERE name = $1", name
        )
    except (asyncpg.PostgresError, *CONNECTION_ERRORS):
        return None
    return owner
