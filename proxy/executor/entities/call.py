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
                                      or parameter (never Postgres's `detail`)
    no row with that id (in this site)           -> 404 not_found
    a caller without a site                      -> 403 forbidden
    an operation the entity does not list        -> 403 forbidden (the seed's answer)
    the table not matching the entity (42xxx)    -> 500 handler_error, logged with the cause
    Postgres unreachable                         -> 503 service_unavailable
    a malformed payload (a gateway's bug)        -> 400 bad_request
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

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
from proxy.executor.data_access import PHYSICAL_PREFIX, quote_identifier
from proxy.executor.entities import cursor as cursors
from proxy.executor.entities import responses, sql
from proxy.executor.entities.body import writable_values
from proxy.executor.entities.query import ListQuery, parse_list_query
from proxy.executor.entities.responses import Answer
from proxy.executor.entities.schema import ID, SITE, EntitySchema, schema_of
from proxy.executor.entities.values import EXPECTED, query_value_ok

log = logging.getLogger("modgate.executor")

_UPDATE_MODES = {"PATCH": "patch", "PUT": "replace"}


class Input(NamedTuple):
    """Values a statement binds for one column, and what the client called them: what a data
    error (22xxx) is blamed on when Postgres names no column."""

    label: str  # a body field, a query parameter, "id" or "cursor"
    field: str  # the column the values are typed as
    values: list[Any]


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
        record = await _fetch(pool, statement, schema, timeout, _list_inputs(query))
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
            pool, sql.create_statement(schema, site_id, values), schema, timeout, _inputs(values)
        )
        return responses.one(row, status=201)
    row_id = _row_id(schema, payload.get("params"))
    inputs = [Input(ID, ID, [row_id])]
    if operation == "read":
        statement = sql.read_statement(schema, site_id, row_id)
    elif operation == "update":
        statement, values = _update(schema, site_id, row_id, payload)
        inputs = _inputs(values) + inputs
    else:
        statement = sql.delete_statement(schema, site_id, row_id)
        if not await _fetch_value(pool, statement, schema, timeout, inputs):
            raise RowNotFound()
        return responses.deleted()
    row = await _fetch_value(pool, statement, schema, timeout, inputs)
    if row is None:
        raise RowNotFound()
    return responses.one(row)


def _update(
    schema: EntitySchema, site_id: str, row_id: str, payload: Mapping[str, Any]
) -> tuple[sql.EntityStatement, dict[str, Any]]:
    """PATCH writes what the body carries; PUT replaces the row: required fields are needed and
    the writable fields it leaves out go back to their column defaults. A PATCH with nothing
    to write (and no updated_at to set) reads the row."""
    mode = _UPDATE_MODES.get(str(payload.get("method")), "patch")
    values = writable_values(
        schema, payload.get("body"), "replace" if mode == "replace" else "patch"
    )
    defaults = [n for n in schema.writable if n not in values] if mode == "replace" else []
    if not (values or defaults or schema.touches_updated_at):
        return sql.read_statement(schema, site_id, row_id), values
    return sql.update_statement(schema, site_id, row_id, values, defaults=defaults), values


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


def _inputs(values: Mapping[str, Any]) -> list[Input]:
    return [Input(name, name, [value]) for name, value in values.items() if value is not None]


def _list_inputs(query: ListQuery) -> list[Input]:
    """The list's values typed by their column: comparison and `in` filters, the cursor's."""
    inputs = [
        Input(f.param, f.field, f.value if isinstance(f.value, list) else [f.value])
        for f in query.filters
        if f.op not in ("is", "like", "ilike")
    ]
    if query.after is not None:
        inputs.append(Input("cursor", ID, [query.after.id]))
        if query.sort != ID and query.after.sort_value is not None:
            inputs.append(Input("cursor", query.sort, [query.after.sort_value]))
    return inputs


async def _fetch(
    pool: Any,
    statement: sql.EntityStatement,
    schema: EntitySchema,
    timeout: float,
    inputs: Sequence[Input] = (),
) -> asyncpg.Record | None:
    try:
        async with pool.acquire(timeout=timeout) as conn:
            record: asyncpg.Record | None = await conn.fetchrow(statement.sql, *statement.args)
    except asyncpg.PostgresError as exc:
        code = str(getattr(exc, "sqlstate", "") or "")
        if code.startswith("22"):
            raise await _data_error(pool, exc, schema, timeout, inputs) from exc
        if code.startswith("23"):
            raise await _constraint_error(pool, exc, schema, timeout) from exc
        raise _mapped(exc, schema) from exc
    except Exception as exc:
        raise _mapped(exc, schema) from exc
    return record


async def _fetch_value(
    pool: Any,
    statement: sql.EntityStatement,
    schema: EntitySchema,
    timeout: float,
    inputs: Sequence[Input] = (),
) -> Any:
    record = await _fetch(pool, statement, schema, timeout, inputs)
    return None if record is None else record[0]


def _message(exc: asyncpg.PostgresError) -> str:
    """Postgres's message (never its `detail`, which may show another site's values), without
    the table's physical prefix."""
    return PHYSICAL_PREFIX.sub("", str(exc.args[0] if exc.args else exc))


async def _data_error(
    pool: Any,
    exc: asyncpg.PostgresError,
    schema: EntitySchema,
    timeout: float,
    inputs: Sequence[Input],
) -> ValidationFailed:
    """A value Postgres refused (too long, out of range, not of the column's type), named.

    Strategy: Postgres names the column only for some errors; otherwise each input is typed
    by its column again, on its own (sql.probe_statement, reading no row), and the ones
    refused are named with their own message. This costs a statement per input, on this
    error path only. When no input alone fails (or probing fails), every candidate is named."""
    column = getattr(exc, "column_name", None)
    if column:
        return ValidationFailed([f"{column}: {_message(exc)}"])
    problems: list[str] = []
    if len(inputs) > 1:
        try:
            async with pool.acquire(timeout=timeout) as conn:
                for item in inputs:
                    probe = sql.probe_statement(schema, item.field, item.values)
                    try:
                        await conn.fetchval(probe.sql, *probe.args)
                    except asyncpg.PostgresError as refused:
                        if not str(refused.sqlstate or "").startswith(("22", "23")):
                            raise
                        problems.append(f"{item.label}: {_message(refused)}")
        except Exception as probe_failed:  # the fallback below still names the candidates
            log.info("entity %s: probing a refused value failed: %r", schema.name, probe_failed)
            problems = []
    if problems:
        return ValidationFailed(dict.fromkeys(problems))
    labels = list(dict.fromkeys(item.label for item in inputs))
    if len(labels) == 1:
        return ValidationFailed([f"{labels[0]}: {_message(exc)}"])
    if labels:
        return ValidationFailed([f"one of {', '.join(labels)}: {_message(exc)}"])
    return ValidationFailed([f"one of the values is out of range for its column: {_message(exc)}"])


# The columns of a constraint, or of a unique index that is no constraint, of one table (in the
# constraint's order; NULL for an expression).
_CONSTRAINT_COLUMNS = """
SELECT coalesce(
  (SELECT array_agg(a.attname::text ORDER BY k.n)
   FROM pg_constraint c
   CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
   LEFT JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
   WHERE c.conrelid = t.oid AND c.conname = $2),
  (SELECT array_agg(a.attname::text ORDER BY k.n)
   FROM pg_index i
   JOIN pg_class ic ON ic.oid = i.indexrelid AND ic.relname = $2
   CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
   LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
   WHERE i.indrelid = t.oid))
FROM (SELECT to_regclass($1) AS oid) AS t
"""

_CONSTRAINT_MESSAGES = {
    # sqlstate: (with the fields, without them)
    "23505": ("{} already exists", "a row with these values already exists"),
    "23P01": ("{} conflicts with an existing row", "a row with these values already exists"),
    "23503": ("{} refers to a row that does not exist", "a value refers to a missing row"),
    "23514": ("{} breaks a check of the table", "the row breaks a check of the table"),
}


async def _constraint_error(
    pool: Any, exc: asyncpg.PostgresError, schema: EntitySchema, timeout: float
) -> ValidationFailed:
    """A constraint the row breaks, named by its fields (the constraint's columns, site_id left
    out, when all of them are visible fields), never by Postgres's `detail`: a unique
    violation's shows the conflicting value, which may be another site's when the constraint
    lacks site_id."""
    code = str(exc.sqlstate)
    column = getattr(exc, "column_name", None)
    if code == "23502" and column:  # not_null_violation
        return ValidationFailed([f"{column} must not be null"])
    if code not in _CONSTRAINT_MESSAGES:
        return ValidationFailed([f"the row breaks a constraint of the table: {_message(exc)}"])
    named, anonymous = _CONSTRAINT_MESSAGES[code]
    columns = await _constraint_columns(pool, exc, schema, timeout)
    fields = [c for c in columns or [None] if c != SITE]
    if not fields or not all(f in schema.visible for f in fields):
        return ValidationFailed([anonymous])
    return ValidationFailed([named.format(" and ".join(str(f) for f in fields))])


async def _constraint_columns(
    pool: Any, exc: asyncpg.PostgresError, schema: EntitySchema, timeout: float
) -> list[str | None] | None:
    name = getattr(exc, "constraint_name", None)
    if not name:
        return None
    table = schema.physical
    if getattr(exc, "schema_name", None) and getattr(exc, "table_name", None):
        table = f"{quote_identifier(exc.schema_name)}.{quote_identifier(exc.table_name)}"
    try:
        async with pool.acquire(timeout=timeout) as conn:
            columns: list[str | None] | None = await conn.fetchval(_CONSTRAINT_COLUMNS, table, name)
    except Exception as failed:  # the message without the fields is still right
        log.info("entity %s: reading constraint %s failed: %r", schema.name, name, failed)
        return None
    return columns


def _mapped(exc: Exception, schema: EntitySchema) -> GatewayError:
    """A database failure as the client's error; the cause goes to the log where it is not the
    client's to fix."""
    if isinstance(exc, asyncpg.PostgresError):
        code = str(getattr(exc, "sqlstate", "") or "")
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
