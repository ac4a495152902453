"""One parameterized SQL statement per entity call, built with `ctx.db`'s StatementBuilder
(identifiers checked and quoted, values bound as JSON and typed by
`jsonb_populate_record(NULL::<table>, ...)`, so no catalog lookup), answered as JSON that
Postgres renders.

Invariants (tests/executor/entities/test_sql.py checks them over every operation and many
queries): `$1` is always the caller's site; every read of the table (the page and the count of a
list, a read, an update, a delete) has `<table>."site_id" = $1` in its WHERE, and an insert
stamps `site_id` from `$1` over whatever the record holds. Nothing else is spliced in but
checked identifiers, and the numbers of parameters.

A list, as one statement (the page, whether there is a next one, the cursor's key and the total):

    WITH "#page" AS (
      SELECT <visible columns>, row_number() OVER (ORDER BY <keys>) AS "#n",
             json_build_array(<sort>::text, <id>::text)::text AS "#key"
      FROM <table> AS <alias> WHERE <site> AND <filters> AND <search>
      ORDER BY <keys> LIMIT <limit + 1> OFFSET <offset>)          -- page N, no cursor
    SELECT <rows #n <= end as a compact JSON array: array_to_json(array_agg(...))>,
           (SELECT count(*) ... WHERE <site, filters, search>),
           <max(#n) > end: a next page exists>, <#key of row end: the next cursor's key>
    FROM "#page"

Keys are `<sort> <dir>, id <dir>` with Postgres's NULL placement (NULLS LAST ascending, NULLS
FIRST descending: NULL sorts as the largest value), so one btree index on
(site_id, <sort>, id) serves both directions. A page after a cursor has no OFFSET: the rows
after the cursor are one or two index ranges (`_after`), the non-NULL values past it,
`(<sort>, id) > (v, i)` (`<` descending), and the NULL rows' share of the order. One range is
the page's own WHERE; two are a `UNION ALL` of `(SELECT ... WHERE <site> AND ... AND <range>
ORDER BY <keys> LIMIT <limit + 1>)`, each an index range scan, merged by the page's ORDER BY and
LIMIT. Never an OR of the ranges: Postgres cannot start an index scan at an OR, it would read
the site from its first row and filter (tests/executor/entities/test_plans.py checks the plans).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.executor.data_access import StatementBuilder, quote_identifier
from proxy.executor.entities.query import Filter, ListQuery
from proxy.executor.entities.schema import ID, SITE, UPDATED_AT, EntitySchema

SITE_PARAM = "$1"
_PAGE = '"#page"'


@dataclass(frozen=True, slots=True)
class EntityStatement:
    sql: str
    args: tuple[Any, ...]


class _Sql:
    """A StatementBuilder for one entity's table with the site bound first, as `$1`."""

    def __init__(self, schema: EntitySchema, site_id: str) -> None:
        self.b = StatementBuilder(schema.physical, quote_identifier(schema.config.table))
        self.schema = schema
        self.table = f"{quote_identifier(schema.physical)} AS {self.b.alias}"
        if self.b.param(site_id) != SITE_PARAM:
            raise AssertionError("the site must be the first parameter")
        self.site = f"{self.b.column(SITE)} = {SITE_PARAM}"

    def statement(self, sql: str) -> EntityStatement:
        return EntityStatement(sql, tuple(self.b.args))

    def columns(self, names: Iterable[str], of: str | None = None) -> str:
        if of is None:
            return ", ".join(self.b.column(name) for name in names)
        return ", ".join(f"{of}.{quote_identifier(name)}" for name in names)

    def by_id(self, row_id: str) -> str:
        """The site and id condition of a statement on one row."""
        column = self.b.column(ID)
        return f"{self.site} AND {column} = (SELECT {column} FROM {self.b.typed({ID: row_id})})"

    def one_row(self, sql: str) -> EntityStatement:
        """`sql` yields the row's visible columns; the statement yields it as JSON text."""
        return self.statement(
            f'WITH "#row" AS ({sql}) SELECT row_to_json("#row")::text FROM "#row"'
        )


def read_statement(schema: EntitySchema, site_id: str, row_id: str) -> EntityStatement:
    s = _Sql(schema, site_id)
    return s.one_row(f"SELECT {s.columns(schema.visible)} FROM {s.table} WHERE {s.by_id(row_id)}")


def create_statement(
    schema: EntitySchema, site_id: str, values: Mapping[str, Any]
) -> EntityStatement:
    s = _Sql(schema, site_id)
    names = [*values, SITE]
    record = s.b.param(orjson.dumps(dict(values)).decode())
    source = (
        f"jsonb_populate_record(NULL::{quote_identifier(schema.physical)}, "
        f"{record}::text::jsonb || jsonb_build_object('{SITE}', {SITE_PARAM}::text)) AS {s.b.alias}"
    )
    targets = ", ".join(quote_identifier(name) for name in names)
    return s.one_row(
        f"INSERT INTO {s.table} ({targets}) SELECT {s.columns(names)} FROM {source} "
        f"RETURNING {s.columns(schema.visible)}"
    )


def update_statement(
    schema: EntitySchema,
    site_id: str,
    row_id: str,
    values: Mapping[str, Any],
    *,
    defaults: Iterable[str] = (),
) -> EntityStatement:
    """Set `values`, reset `defaults` to their column defaults (PUT), and updated_at to now()
    when the entity has it; the caller makes sure there is something to set."""
    s = _Sql(schema, site_id)
    sets: list[str] = []
    if values:
        targets = ", ".join(quote_identifier(name) for name in values)
        sets.append(f"({targets}) = (SELECT {s.columns(values)} FROM {s.b.typed(dict(values))})")
    sets += [f"{quote_identifier(name)} = DEFAULT" for name in defaults]
    if schema.touches_updated_at:
        sets.append(f"{quote_identifier(UPDATED_AT)} = now()")
    return s.one_row(
        f"UPDATE {s.table} SET {', '.join(sets)} WHERE {s.by_id(row_id)} "
        f"RETURNING {s.columns(schema.visible)}"
    )


def delete_statement(schema: EntitySchema, site_id: str, row_id: str) -> EntityStatement:
    """Yields the number of rows deleted (0 or 1)."""
    s = _Sql(schema, site_id)
    return s.statement(
        f'WITH "#row" AS (DELETE FROM {s.table} WHERE {s.by_id(row_id)} RETURNING 1) '
        'SELECT count(*) FROM "#row"'
    )


def list_statement(schema: EntitySchema, site_id: str, query: ListQuery) -> EntityStatement:
    """Yields one row: (rows as JSON text, total, more, the last row's key as JSON text)."""
    s = _Sql(schema, site_id)
    b = s.b
    where = " AND ".join([s.site, *(_condition(s, f) for f in query.filters)])
    if query.search is not None:
        pattern = b.param("%" + _escape_like(query.search) + "%")
        matches = (f"{b.column(name)} ILIKE {pattern}::text" for name in schema.config.searchable)
        where += f" AND ({' OR '.join(matches)})"
    sort, row_id = b.column(query.sort), b.column(ID)
    direction = " DESC" if query.descending else ""
    keys = f"{sort}{direction}" if query.sort == ID else f"{sort}{direction}, {row_id}{direction}"
    ranges = None if query.after is None else _after(s, query)
    end = query.offset + query.limit
    fetch, last = b.param(query.limit + 1), b.param(end)
    selected = ", ".join(
        [
            *(b.column(name) for name in schema.visible),
            f'row_number() OVER (ORDER BY {keys}) AS "#n"',
            f'json_build_array({sort}::text, {row_id}::text)::text AS "#key"',
        ]
    )
    if ranges is None:  # page N without a cursor: OFFSET
        page = (
            f"SELECT {selected} FROM {s.table} WHERE {where} "
            f"ORDER BY {keys} LIMIT {fetch} OFFSET {b.param(query.offset)}"
        )
    elif len(ranges) == 1:
        page = (
            f"SELECT {selected} FROM {s.table} WHERE {where} AND {ranges[0]} "
            f"ORDER BY {keys} LIMIT {fetch}"
        )
    else:  # each range its own index scan, merged by the page's order
        needed = s.columns(dict.fromkeys([*schema.visible, query.sort, ID]))
        branches = " UNION ALL ".join(
            f"(SELECT {needed} FROM {s.table} WHERE {where} AND {condition} "
            f"ORDER BY {keys} LIMIT {fetch})"
            for condition in ranges
        )
        page = f"SELECT {selected} FROM ({branches}) AS {b.alias} ORDER BY {keys} LIMIT {fetch}"
    row = f'(SELECT "r" FROM (SELECT {s.columns(schema.visible, _PAGE)}) AS "r")'
    rows = f'array_agg({row} ORDER BY {_PAGE}."#n") FILTER (WHERE {_PAGE}."#n" <= {last})'
    return s.statement(
        f"WITH {_PAGE} AS ({page}) SELECT "
        f"coalesce(array_to_json({rows}), '[]')::text, "
        f"(SELECT count(*) FROM {s.table} WHERE {where}), "
        f'coalesce(max({_PAGE}."#n") > {last}, false), '
        f'max({_PAGE}."#key") FILTER (WHERE {_PAGE}."#n" = {last}) '
        f"FROM {_PAGE}"
    )


def _condition(s: _Sql, item: Filter) -> str:
    if item.op == "is":
        spelled = {None: "NULL", True: "TRUE", False: "FALSE"}[item.value]
        return f"{s.b.column(item.field)} IS {spelled}"
    return s.b.filter([item.op, item.field, item.value])


def _after(s: _Sql, query: ListQuery) -> list[str]:
    """The rows after the cursor's in the order of the keys (NULL sorting as the largest value),
    as conditions each of which is one index range scan on (site_id, <sort>, id) read in that
    order: a row comparison for the non-NULL values, `<sort> IS NULL [AND id > i]` (`<`
    descending) for the NULLs (ascending they come after every value, descending before). An
    OR of the two would be a filter on a scan of the whole site, so the page is their union."""
    after = query.after
    if after is None:
        raise AssertionError("no cursor")
    b = s.b
    sort, row_id = b.column(query.sort), b.column(ID)
    cmp = "<" if query.descending else ">"
    record = b.typed(
        {ID: after.id} if query.sort == ID else {query.sort: after.sort_value, ID: after.id}
    )
    id_value = f"(SELECT {row_id} FROM {record})"
    if query.sort == ID:
        return [f"{row_id} {cmp} {id_value}"]
    if after.sort_value is None:  # among the NULLs: the rest of them, then (desc) the values
        nulls = f"{sort} IS NULL AND {row_id} {cmp} {id_value}"
        return [nulls, f"{sort} IS NOT NULL"] if query.descending else [nulls]
    sort_value = f"(SELECT {sort} FROM {record})"
    values = f"({sort}, {row_id}) {cmp} ({sort_value}, {id_value})"
    return [values] if query.descending else [values, f"{sort} IS NULL"]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def probe_statement(schema: EntitySchema, name: str, values: list[Any]) -> EntityStatement:
    """Whether `values` fit column `name`, read from no row (the table's row type only, so no
    site condition): the error path's way of finding which input Postgres refused (call.py).
    Yields the number of values, or fails as the statement that carried them failed."""
    b = StatementBuilder(schema.physical, quote_identifier(schema.config.table))
    records = b.typed([{name: value} for value in values], many=True)
    return EntityStatement(f"SELECT count({b.column(name)}) FROM {records}", tuple(b.args))
