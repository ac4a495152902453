"""One entity call, from the gateway's payload to an Answer (or a GatewayError):

    {"kind": "entity", "module_id", "site_id", "user_id", "api_key_id", "consumer_id",
     "scopes", "route_id", "entity": EntityConfig.as_json(),
     "operation": "list|read|create|update|delete",
     "params": {"id"}, "query": [[name, value], ...], "body": JSON or null,
     "method": "GET|POST|PATCH|PUT|DELETE"}

The gateway has authenticated, authorized (scopes) and limited the caller; this checks the
input against the entity, runs one statement (sql.py) and shapes the answer. Errors:

    input breaking the entity's rules, or refused by Postgres (22xxx, 23xxx)
                                   -> 400 validation_failed, details naming the field
    no row with that id (in this site)           -> 404 not_found
    a caller without a site                      -> 403 forbidden
    an operation the entity does not list        -> 403 forbidden (the seed's answer)
    the table not matching the entity (42xxx)    -> 500 handler_error, logged with the cause
    Postgres unreachable                         -> 503 service_unavailable
    a malformed payload (a gateway's bug)        -> 400 bad_request
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import asyncpg

from proxy.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    HandlerFailed,
    HandlerTimeout,
    RowNotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from proxy.executor.data_access import PHYSICAL_PREFIX
from proxy.executor.entities import cursor as cursors
from proxy.executor.entities import responses, sql
from proxy.executor.entities.body import writable_values
from proxy.executor.entities.query import parse_list_query
from proxy.executor.entities.responses import Answer
from proxy.executor.entities.schema import ID, EntitySchema, schema_of
from proxy.executor.entities.values import EXPECTED, query_value_ok

log = logging.getLogger("modgate.executor")

_UPDATE_MODES = {"PATCH": "patch", "PUT": "replace"}


async def run_entity_call(pool: Any, payload: Mapping[str, Any], *, timeout: float) -> Answer:
    """Run one entity call on a connection of `pool` (an asyncpg pool; `timeout` bounds the
    wait for a connection)."""
    schema = schema_of(payload.get("entity"), str(payload["module_id"]))
    operation = payload.get("operation")
    if operation not in schema.config.operations:
        raise Forbidden(f"{str(operation)[:32]!r} is not enabled for {schema.name}")
    site_id = payload.get("site_id")
    if not isinstance(site_id, str) or not site_id:
        raise Forbidden("Entity routes need a credential bound to a site")
    pairs = _pairs(payload.get("query"))
    if operation == "list":
        query = parse_list_query(pairs, schema)
        statement = sql.list_statement(schema, site_id, query)
        record = await _fetch(pool, statement, schema, timeout)
        rows, total, more, key = record or ("[]", 0, False, None)  # an aggregate: one row
        next_cursor = (
            cursors.encode(key, query.page + 1, query.fingerprint) if more and key else None
        )
        return responses.page(
            rows, page=query.page, limit=query.limit, total=total, next_cursor=next_cursor
        )
    if pairs:
        raise ValidationFailed(
            f"{name} is not a query parameter of {operation}" for name, _ in pairs
        )
    if operation == "create":
        values = writable_values(schema, payload.get("body"), "create")
        row = await _fetch_value(
            pool, sql.create_statement(schema, site_id, values), schema, timeout
        )
        return responses.one(row, status=201)
    row_id = _row_id(schema, payload.get("params"))
    if operation == "read":
        statement = sql.read_statement(schema, site_id, row_id)
    elif operation == "update":
        statement = _update(schema, site_id, row_id, payload)
    else:
        statement = sql.delete_statement(schema, site_id, row_id)
        if not await _fetch_value(pool, statement, schema, timeout):
            raise RowNotFound()
        return responses.deleted()
    row = await _fetch_value(pool, statement, schema, timeout)
    if row is None:
        raise RowNotFound()
    return responses.one(row)


def _update(
    schema: EntitySchema, site_id: str, row_id: str, payload: Mapping[str, Any]
) -> sql.EntityStatement:
    """PATCH writes what the body carries; PUT replaces the row: required fields are needed and
    the writable fields it leaves out go back to their column defaults. A PATCH with nothing
    to write (and no updated_at to set) reads the row."""
    mode = _UPDATE_MODES.get(str(payload.get("method")), "patch")
    values = writable_values(
        schema, payload.get("body"), "replace" if mode == "replace" else "patch"
    )
    defaults = [n for n in schema.writable if n not in values] if mode == "replace" else []
    if not (values or defaults or schema.touches_updated_at):
        return sql.read_statement(schema, site_id, row_id)
    return sql.update_statement(schema, site_id, row_id, values, defaults=defaults)


def _row_id(schema: EntitySchema, params: object) -> str:
    row_id = params.get("id") if isinstance(params, Mapping) else None
    if not isinstance(row_id, str):
        raise BadRequest("Malformed execute request: no id")
    field = schema.fields.get(ID)
    if field is not None and field.type in EXPECTED and not query_value_ok(row_id, field.type):
        raise ValidationFailed([f"id must be {EXPECTED[field.type]}, got {row_id[:64]!r}"])
    return row_id


def _pairs(raw: object) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if isinstance(raw, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in raw
    ):
        return [(name, value) for name, value in raw]
    raise BadRequest("Malformed execute request: query must be [[name, value], ...]")


async def _fetch(
    pool: Any, statement: sql.EntityStatement, schema: EntitySchema, timeout: float
) -> asyncpg.Record | None:
    try:
        async with pool.acquire(timeout=timeout) as conn:
            record: asyncpg.Record | None = await conn.fetchrow(statement.sql, *statement.args)
    except Exception as exc:
        raise _mapped(exc, schema) from exc
    return record


async def _fetch_value(
    pool: Any, statement: sql.EntityStatement, schema: EntitySchema, timeout: float
) -> Any:
    record = await _fetch(pool, statement, schema, timeout)
    return None if record is None else record[0]


def _mapped(exc: Exception, schema: EntitySchema) -> GatewayError:
    """A database failure as the client's error; the cause goes to the log where it is not the
    client's to fix."""
    if isinstance(exc, asyncpg.PostgresError):
        code = str(getattr(exc, "sqlstate", "") or "")
        if code.startswith(("22", "23")):  # the caller's values: shown, table prefix stripped
            return ValidationFailed(
                [PHYSICAL_PREFIX.sub("", str(exc.args[0] if exc.args else exc))]
            )
        if code == "57014":
            return HandlerTimeout("The query took too long")
        if not code.startswith(("08", "53", "57P")):
            log.warning(
                "entity %s: its table %s refused the statement (%s %s): check the entity "
                "against the table",
                schema.name,
                schema.physical,
                code,
                exc,
            )
            return HandlerFailed(f"The entity {schema.name} does not match its table")
    elif isinstance(exc, asyncpg.DataError):  # $1, the site id, is not the column's type
        return BadRequest("This request's site cannot be stored in this entity's table")
    elif isinstance(exc, TimeoutError):
        return HandlerTimeout("The database did not answer in time")
    elif isinstance(exc, GatewayError):
        return exc
    elif not isinstance(exc, (OSError, asyncpg.InterfaceError)):
        log.error("entity %s: unexpected failure: %r", schema.name, exc)
        return HandlerFailed(f"The entity {schema.name} failed")
    log.warning("entity %s: database unavailable: %s", schema.name, exc)
    return ServiceUnavailable("The database is unavailable")
