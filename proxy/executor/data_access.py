"""`ctx.db` on the host side: a handler's query spec becomes parameterized SQL run with asyncpg.

The spec (JSON, sent by the builder in `db_client_js.py`; the contract between JS and Python):

    {"table":   str,                      logical name, e.g. "contacts"
     "action":  "select" | "insert" | "update" | "delete",
     "columns": str | null,               select list ("*" or "a, b"); for writes the .select()
                                          after them, null = return no rows (data null)
     "values":  object | array | null,    insert: one row or an array of rows; update: one object
     "filters": [[op, column, value], ...]   op: eq neq gt gte lt lte in like ilike
     "order":   [[column, ascending], ...],
     "limit":   int | null,
     "range":   [from, to] | null,        inclusive, as supabase-js: offset from, to-from+1 rows
     "single":  null | "single" | "maybeSingle"}

Missing keys take these defaults. The answer is supabase-shaped: `{"data": ..., "error": None}`
or `{"data": None, "error": {"message", "code"[, "details"]}}`.

Strategy:
- Tenancy is not the handler's to state. The table is always `mod_<module prefix>_<name>` of
  the caller's module, every statement carries `site_id = <caller's site>` as its first filter,
  inserted rows are stamped with that site_id and updates drop any site_id they carry. A table
  without a site_id column therefore refuses every query.
- Identifiers must match `^[a-z_][a-z0-9_]{0,62}$` and are always double-quoted; values are
  always bind parameters. Each value travels as JSON text (`$n::text::jsonb`) and takes its
  column's type through `jsonb_populate_record(NULL::<table>, ...)` (PostgREST's approach), so
  uuid, timestamptz, numeric, arrays and json/jsonb columns all work with no catalog lookup and
  no type cache to go stale.
- Results come back as one `json_agg(...)::text`, so Postgres does the JSON rendering as
  PostgREST does: uuid as text, timestamps ISO 8601, numeric as JSON numbers, bytea as "\\x..".
- The value records are aliased with the logical table name, like the table itself, so
  Postgres's own messages ("column contacts.x does not exist") name what the handler wrote.
- A write with .single()/.maybeSingle() that touches the wrong number of rows is rolled back
  (a savepoint when the caller is already in a transaction), as PostgREST does.

Limits: a select returns at most MAX_ROWS rows (a larger or absent limit is capped), an insert
takes at most MAX_INSERT_ROWS rows, an `in` list MAX_IN_VALUES values, a spec MAX_FILTERS
filters. Update and delete need a filter besides the site (Supabase's pg-safeupdate: 21000).
Rows of a bulk insert that lack a key get NULL there, not the default (supabase-js's
defaultToNull). `eq`/`neq` with null mean IS NULL / IS NOT NULL. Order, limit and range
apply to selects only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from proxy.errors import ModgateError

MAX_ROWS = 1000
MAX_INSERT_ROWS = 1000
MAX_IN_VALUES = 1000
MAX_FILTERS = 100

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
PHYSICAL_PREFIX = re.compile(r"\bmod_[a-z0-9]{1,8}_")
_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_PATTERNS = {"like": "LIKE", "ilike": "ILIKE"}
_ACTIONS = ("select", "insert", "update", "delete")
_SINGLE = (None, "single", "maybeSingle")
# SQLSTATEs whose Postgres message is a user error worth showing (after the table prefix is
# stripped); any other error keeps its code but gets a generic message.
_SHOWN_CLASSES = ("22", "23")
_SHOWN_CODES = frozenset({"42703", "42804", "42883", "428C9", "21000", "57014"})


class QueryRefused(ModgateError):
    """A spec refused before any SQL runs (or a single() check failed); becomes `error`."""

    def __init__(self, code: str, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details

    def as_error(self) -> dict[str, str]:
        error = {"message": self.message, "code": self.code}
        if self.details is not None:
            error["details"] = self.details
        return error


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement and its bind parameters; `returning` says whether it yields rows."""

    sql: str
    args: tuple[Any, ...]
    returning: bool
    single: str | None
    write: bool


def physical_table(module_id: str, table: object) -> str:
    """`mod_<first 8 chars of module_id without dashes>_<table>`, or QueryRefused."""
    prefix = module_id.replace("-", "").lower()[:8]
    if not re.fullmatch(r"[a-z0-9]{1,8}", prefix):
        raise QueryRefused("invalid_identifier", "module id cannot name tables")
    name = checked_identifier(table, "table")
    physical = f"mod_{prefix}_{name}"
    if len(physical) > 63:  # Postgres would truncate it silently
        raise QueryRefused("invalid_identifier", "table name too long")
    return physical


def build_statement(spec: Mapping[str, Any], *, module_id: str, site_id: str) -> Statement:
    """The parameterized SQL for one spec; pure (no I/O), raises QueryRefused."""
    action, filters = _checked_shape(spec)
    logical = checked_identifier(spec.get("table"), "table")
    b = StatementBuilder(physical_table(module_id, logical), quote_identifier(logical))
    columns = "*" if action == "select" and spec.get("columns") is None else spec.get("columns")
    returning = "" if columns is None else b.select_list(columns)
    single, table = spec.get("single"), f"{quote_identifier(b.physical)} AS {b.alias}"
    if action == "insert":
        rows = _insert_rows(spec.get("values"))
        if not rows:  # nothing to insert: answered without a query
            return Statement("", (), bool(returning), single, True)
        sql = f"INSERT INTO {table} {b.insert_rows(rows, site_id)}"
    else:
        where = " AND ".join(b.filter(f) for f in [["eq", "site_id", site_id], *filters])
        if action == "select":
            sql = f"SELECT {returning} FROM {table} WHERE {where}{b.order(spec.get('order'))}"
            sql += b.limit(spec.get("limit"), spec.get("range"))
        elif action == "update":
            sql = f"UPDATE {table} SET {b.update_set(spec.get('values'))} WHERE {where}"
        else:
            sql = f"DELETE FROM {table} WHERE {where}"
    if action != "select" and returning:
        sql += f" RETURNING {returning}"
    if returning:
        alias = b.alias
        sql = f"WITH {alias} AS ({sql}) SELECT coalesce(json_agg({alias}), '[]')::text FROM {alias}"
    return Statement(sql, tuple(b.args), bool(returning), single, action != "select")


async def execute_query(
    conn: Any, *, module_id: str, site_id: str | None, spec: Mapping[str, Any]
) -> dict[str, Any]:
    """Run one spec on `conn` (an asyncpg connection) and answer `{"data", "error"}`.

    Connection failures (class 08, 57P) and non-Postgres errors propagate to the caller.
    """
    if not site_id:
        return _failed(QueryRefused("no_site", "this request has no site; ctx.db needs one"))
    try:
        if not isinstance(spec, Mapping):
            raise QueryRefused("invalid_query", "the query spec must be an object")
        statement = build_statement(spec, module_id=module_id, site_id=str(site_id))
        if statement.sql == "":  # an insert of no rows
            data = _shape([], statement.single) if statement.returning else None
            return {"data": data, "error": None}
        if not statement.returning:
            await conn.execute(statement.sql, *statement.args)
            return {"data": None, "error": None}
        if not (statement.write and statement.single):
            return {"data": _shape(await _fetch(conn, statement), statement.single), "error": None}
        async with conn.transaction():  # a write that breaks single() must not stay done
            return {"data": _shape(await _fetch(conn, statement), statement.single), "error": None}
    except QueryRefused as refused:
        return _failed(refused)
    except asyncpg.PostgresError as exc:
        code = str(getattr(exc, "sqlstate", "") or "")
        if code.startswith(("08", "57P")):
            raise
        return {"data": None, "error": _postgres_error(exc, code, spec)}


async def _fetch(conn: Any, statement: Statement) -> list[Any]:
    rows: list[Any] = orjson.loads(await conn.fetchval(statement.sql, *statement.args))
    return rows


def _shape(rows: list[Any], single: str | None) -> Any:
    """supabase's answer for rows: the list, or one object for single()/maybeSingle()."""
    if single is None:
        return rows
    if len(rows) == 1:
        return rows[0]
    if not rows and single == "maybeSingle":
        return None
    raise QueryRefused(
        "PGRST116",
        "JSON object requested, multiple (or no) rows returned",
        f"The result contains {len(rows)} rows",
    )


def _failed(refused: QueryRefused) -> dict[str, Any]:
    return {"data": None, "error": refused.as_error()}


def _postgres_error(exc: Exception, code: str, spec: Mapping[str, Any]) -> dict[str, str]:
    """A short safe error: never SQL text, detail or hint, never a physical table name."""
    if code == "42P01":
        return {"message": f"relation {spec.get('table')} does not exist", "code": code}
    if code.startswith(_SHOWN_CLASSES) or code in _SHOWN_CODES:
        message = str(getattr(exc, "message", "") or "database error")
        return {"message": PHYSICAL_PREFIX.sub("", message), "code": code}
    return {"message": "database error", "code": code or "database_error"}


def checked_identifier(name: object, what: str) -> str:
    """`name` when it is an identifier `^[a-z_][a-z0-9_]{0,62}$`, or QueryRefused."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise QueryRefused("invalid_identifier", f"invalid {what} name: {str(name)[:64]!r}")
    return name


def quote_identifier(name: str) -> str:
    """A double-quoted identifier (a checked one: quoting is the second line of defence)."""
    return '"' + name.replace('"', '""') + '"'


class StatementBuilder:
    """Accumulates the bind parameters of one statement while its clauses are written (also
    the entity statements' builder, executor/entities/sql.py)."""

    __slots__ = ("alias", "args", "physical")

    def __init__(self, physical: str, alias: str) -> None:
        self.physical, self.alias = physical, alias
        self.args: list[Any] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def column(self, name: object) -> str:
        return f"{self.alias}.{quote_identifier(checked_identifier(name, 'column'))}"

    def typed(self, record: Any, *, many: bool = False) -> str:
        """A FROM item turning JSON (a bind parameter) into rows of the table's own type."""
        fn = "jsonb_populate_recordset" if many else "jsonb_populate_record"
        json = self.param(orjson.dumps(record).decode())
        return f"{fn}(NULL::{quote_identifier(self.physical)}, {json}::text::jsonb) AS {self.alias}"

    def select_list(self, columns: object) -> str:
        if not isinstance(columns, str):
            raise QueryRefused("invalid_identifier", "select list must be a string")
        if columns.strip() == "*":
            return f"{self.alias}.*"
        names = dict.fromkeys(part.strip() for part in columns.split(","))
        return ", ".join(self.column(name) for name in names)

    def filter(self, item: object) -> str:
        if not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str):
            raise QueryRefused("invalid_query", "a filter must be [op, column, value]")
        op, name, value = item
        column = self.column(name)
        if op in _COMPARISONS:
            if value is None and op in ("eq", "neq"):
                return f"{column} IS {'NOT ' if op == 'neq' else ''}NULL"
            value_of = f"(SELECT {column} FROM {self.typed({name: value})})"
            return f"{column} {_COMPARISONS[op]} {value_of}"
        if op in _PATTERNS:
            if not isinstance(value, str):
                raise QueryRefused("invalid_query", f"{op} needs a string pattern")
            return f"{column}::text {_PATTERNS[op]} {self.param(value)}::text"
        if op == "in":
            if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
                raise QueryRefused("invalid_query", f"in needs a list of at most {MAX_IN_VALUES}")
            records = [{name: v} for v in value]
            return f"{column} = ANY(ARRAY(SELECT {column} FROM {self.typed(records, many=True)}))"
        raise QueryRefused("invalid_query", f"unknown filter operator: {op[:32]!r}")

    def order(self, order: object) -> str:
        if not order:
            return ""
        if not isinstance(order, list) or not all(
            isinstance(o, list) and len(o) == 2 and isinstance(o[1], bool) for o in order
        ):
            raise QueryRefused("invalid_query", "order must be [[column, ascending], ...]")
        keys = ", ".join(f"{self.column(c)} {'ASC' if asc else 'DESC'}" for c, asc in order)
        return f" ORDER BY {keys}"

    def limit(self, limit: object, range_: object) -> str:
        count, offset = MAX_ROWS, 0
        if limit is not None:
            count = min(count, _count(limit, "limit"))
        if range_ is not None:
            if not isinstance(range_, list) or len(range_) != 2:
                raise QueryRefused("invalid_query", "range must be [from, to]")
            offset = _count(range_[0], "range")
            count = min(count, max(0, _count(range_[1], "range") - offset + 1))
        return f" LIMIT {self.param(count)} OFFSET {self.param(offset)}"

    def insert_rows(self, rows: list[dict[str, Any]], site_id: str) -> str:
        names = [n for n in dict.fromkeys(k for r in rows for k in r) if n != "site_id"]
        names.append("site_id")  # stamped below, whatever the handler sent
        targets = ", ".join(quote_identifier(checked_identifier(n, "column")) for n in names)
        stamped = [{**row, "site_id": site_id} for row in rows]
        sources = ", ".join(self.column(n) for n in names)
        return f"({targets}) SELECT {sources} FROM {self.typed(stamped, many=True)}"

    def update_set(self, values: object) -> str:
        if not isinstance(values, dict):
            raise QueryRefused("invalid_query", "update takes one object")
        changes = {k: v for k, v in values.items() if k != "site_id"}  # a row never changes site
        if not changes:
            raise QueryRefused("invalid_query", "update has no columns to change")
        targets = ", ".join(quote_identifier(checked_identifier(n, "column")) for n in changes)
        sources = ", ".join(self.column(n) for n in changes)
        return f"({targets}) = (SELECT {sources} FROM {self.typed(changes)})"


def _checked_shape(spec: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The action and filters, once the spec's shape fits its action."""
    action = spec.get("action", "select")
    if action not in _ACTIONS:
        raise QueryRefused("invalid_query", "unknown action")
    if spec.get("single") not in _SINGLE:
        raise QueryRefused("invalid_query", "single must be null, 'single' or 'maybeSingle'")
    filters = spec.get("filters") or []
    if not isinstance(filters, list) or len(filters) > MAX_FILTERS:
        raise QueryRefused("invalid_query", "filters must be a list of [op, column, value]")
    if action != "select":
        if spec.get("order") or spec.get("limit") is not None or spec.get("range") is not None:
            raise QueryRefused("invalid_query", "order, limit and range apply to select only")
        if action == "insert" and filters:
            raise QueryRefused("invalid_query", "insert takes no filters")
        if action != "insert" and not filters:
            raise QueryRefused("21000", f"{action.upper()} requires a WHERE clause")
    return action, filters


def _insert_rows(values: object) -> list[dict[str, Any]]:
    rows: list[Any] = values if isinstance(values, list) else [values]
    if len(rows) > MAX_INSERT_ROWS or not all(isinstance(r, dict) for r in rows):
        raise QueryRefused(
            "invalid_query", f"insert takes an object or at most {MAX_INSERT_ROWS} objects"
        )
    return rows


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryRefused("invalid_query", f"{what} needs non-negative integers")
    return value
