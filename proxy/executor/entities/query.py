"""A list's query parameters, checked against the entity: the issue's grammar, PostgREST's
operators in the seed's bracket spelling.

    page=N          >= 1 (default 1); a page without a cursor is read with OFFSET
    limit=N         1..100 (default 20)
    sort=F          a `sortable` field, or the default key (created_at when the entity
                    has it, as it does when its table has it: `routes apply` adds the
                    column, store/entities.py; else id); ties are broken by id
    order=asc|desc  default desc (the seed's)
    search=S        case-insensitive substring of any `searchable` field
    cursor=C        continue after the page that gave C (same sort, order, search, filters)
    F=V             F[eq]=V
    F[op]=V         F in `filters`; op in eq neq gt gte lt lte in like ilike is.
                    `in` takes a comma list; `like`/`ilike` take a pattern (`%` or `*` for any
                    run, `_` for one character, a backslash escaping the next one; a
                    pattern ending in a lone backslash is refused) on string/text fields;
                    `is` takes null, true or false (true/false on boolean fields).
                    array/jsonb/object fields take only `is`.

The reserved names win over a field of the same name; `F[eq]=V` still filters on it.
Strategy: every parameter is judged, and every problem found is reported at once
(ValidationFailed's `details`, each naming its parameter): an unknown parameter, a field not
allowed for that use, a parameter given twice, a value of the wrong type, a value holding NUL
(U+0000: Postgres's text cannot), a cursor whose values do not fit the sort field and id.
Nothing is ignored. Each filter keeps the parameter that spelled it (`param`), so a value that
passes here and is still refused by its column (too long for a varchar, out of a numeric's
range) comes back naming that parameter (call.py).

Page or cursor: `page` alone costs an OFFSET (the rows before it are read and dropped), which is
fine for the first pages a UI shows; `next_cursor` costs an index range scan wherever it is, so
deep pages and exports follow cursors. A cursor carries the page it leads to, so `page` with a
cursor is refused rather than one of them being ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from proxy.errors import ValidationFailed
from proxy.executor.data_access import MAX_IN_VALUES
from proxy.executor.entities import cursor as cursors
from proxy.executor.entities.schema import ID, EntitySchema
from proxy.executor.entities.values import (
    EXPECTED,
    SCALAR_TYPES,
    TEXT_TYPES,
    cursor_value_ok,
    query_value_ok,
)
from proxy.routing.entities import FILTER_OPERATORS

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
MAX_PAGE: Final = 10**9
RESERVED: Final = ("page", "limit", "sort", "order", "search", "cursor")

_NAME = re.compile(r"([a-z_][a-z0-9_]{0,62})(?:\[([^\[\]]*)\])?")
_COUNT = re.compile(r"[0-9]{1,10}")
_IS = {"null": None, "true": True, "false": False}
_NUL = "{} must not contain the NUL character (%00)"


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: str  # one of FILTER_OPERATORS
    value: Any  # str; list[str] for in; None, True or False for is
    param: str = ""  # the query parameter that spelled it, for messages


@dataclass(frozen=True, slots=True)
class ListQuery:
    page: int
    limit: int
    sort: str
    descending: bool
    search: str | None
    filters: tuple[Filter, ...]
    after: cursors.Cursor | None  # keyset position: rows after this one
    fingerprint: str  # of sort, order, search and filters (cursor.py)

    @property
    def offset(self) -> int:
        """Rows skipped with OFFSET: only for a page reached without a cursor."""
        return 0 if self.after is not None else (self.page - 1) * self.limit


def parse_list_query(pairs: Iterable[tuple[str, str]], schema: EntitySchema) -> ListQuery:
    """The list query `pairs` spell, or ValidationFailed naming every problem."""
    problems: list[str] = []
    single: dict[str, str] = {}
    filters: dict[tuple[str, str], Filter] = {}
    for name, value in pairs:
        if name in RESERVED:
            if name in single:
                problems.append(f"{name} is given more than once")
            single[name] = value
            continue
        item = _filter(name, value, schema, problems)
        if item is None:
            continue
        if (item.field, item.op) in filters:
            problems.append(f"{name} is given more than once")
        filters[(item.field, item.op)] = item

    page = _count(single.get("page"), "page", 1, MAX_PAGE, 1, problems)
    limit = _count(single.get("limit"), "limit", 1, MAX_LIMIT, DEFAULT_LIMIT, problems)
    sort = _sort(single.get("sort"), schema, problems)
    order = single.get("order", "desc")
    if order not in ("asc", "desc"):
        problems.append(f"order must be asc or desc, got {order!r}")
    search = single.get("search")
    if search is not None:
        if not schema.config.searchable:
            problems.append(f"search: {schema.name} has no searchable fields")
        elif not search:
            problems.append("search must not be empty")
        elif "\x00" in search:
            problems.append(_NUL.format("search"))
    chosen = tuple(sorted(filters.values(), key=lambda f: (f.field, f.op)))
    selection = [schema.name, sort, order, search, [[f.field, f.op, f.value] for f in chosen]]
    fingerprint = cursors.fingerprint(selection)
    after = _after(single.get("cursor"), fingerprint, "page" in single, problems)
    if after is not None and not _cursor_fits(after, sort, schema):
        problems.append("cursor is not one this endpoint made (its values do not fit the sort)")
        after = None
    if problems:
        raise ValidationFailed(problems)
    return ListQuery(
        page=after.page if after is not None else page,
        limit=limit,
        sort=sort,
        descending=order == "desc",
        search=search,
        filters=chosen,
        after=after,
        fingerprint=fingerprint,
    )


def _filter(name: str, text: str, schema: EntitySchema, problems: list[str]) -> Filter | None:
    match = _NAME.fullmatch(name)
    field = schema.fields.get(match.group(1)) if match else None
    if match is None or field is None:
        problems.append(f"{name} is not a query parameter of {schema.name}")
        return None
    if field.name not in schema.config.filters:
        allowed = ", ".join(schema.config.filters) or "none"
        problems.append(f"{name}: {field.name} cannot be filtered on (filters: {allowed})")
        return None
    op = match.group(2) if match.group(2) is not None else "eq"
    if op not in FILTER_OPERATORS:
        problems.append(f"{name}: unknown operator {op!r} (one of {', '.join(FILTER_OPERATORS)})")
        return None
    kind = field.type
    if "\x00" in text:
        problems.append(_NUL.format(name))
        return None
    if op == "is":
        if text not in _IS or (text != "null" and kind != "boolean"):
            spelled = "null, true or false" if kind == "boolean" else "null"
            problems.append(f"{name} must be {spelled}, got {text!r}")
            return None
        return Filter(field.name, op, _IS[text], name)
    if kind not in SCALAR_TYPES:
        problems.append(f"{name}: {field.name} is a {kind} field; it takes only {field.name}[is]")
        return None
    if op in ("like", "ilike"):
        if kind not in TEXT_TYPES:
            problems.append(f"{name}: only string and text fields take {op}")
            return None
        if (len(text) - len(text.rstrip("\\"))) % 2:
            problems.append(f"{name}: a pattern must not end with a lone backslash (\\ escapes)")
            return None
        return Filter(field.name, op, text.replace("*", "%"), name)
    if op == "in":
        values = text.split(",")
        if len(values) > MAX_IN_VALUES:
            problems.append(f"{name} takes at most {MAX_IN_VALUES} values")
            return None
        bad = [v for v in values if not query_value_ok(v, kind)]
        if bad:
            problems.append(f"{name} must be a comma list of {_plural(kind)}, got {bad[0]!r}")
            return None
        return Filter(field.name, op, values, name)
    if not query_value_ok(text, kind):
        problems.append(f"{name} must be {EXPECTED[kind]}, got {text[:64]!r}")
        return None
    return Filter(field.name, op, text, name)


def _cursor_fits(after: cursors.Cursor, sort: str, schema: EntitySchema) -> bool:
    """Whether a cursor's values fit the sort field's type and the id's, where the entity
    declares them (an undeclared id's type is the table's; Postgres judges it, call.py)."""
    for name, value in ((sort, after.sort_value), (ID, after.id)):
        field = schema.fields.get(name)
        if value is None:
            continue
        if "\x00" in value or (field is not None and not cursor_value_ok(value, field.type)):
            return False
    return True


def _sort(text: str | None, schema: EntitySchema, problems: list[str]) -> str:
    if text is None:
        return schema.default_sort
    allowed = dict.fromkeys([*schema.config.sortable, schema.default_sort])
    if text not in allowed:
        problems.append(f"sort: {text[:64]!r} is not sortable (one of {', '.join(allowed)})")
        return schema.default_sort
    field = schema.fields.get(text)
    if field is not None and field.type not in SCALAR_TYPES:
        problems.append(f"sort: {text} is a {field.type} field, which has no order")
    return text


def _count(
    text: str | None, name: str, low: int, high: int, default: int, problems: list[str]
) -> int:
    if text is None:
        return default
    if _COUNT.fullmatch(text) is None or not low <= int(text) <= high:
        problems.append(f"{name} must be an integer from {low} to {high}, got {text[:64]!r}")
        return default
    return int(text)


def _after(
    token: str | None, fingerprint: str, with_page: bool, problems: list[str]
) -> cursors.Cursor | None:
    if token is None:
        return None
    if with_page:
        problems.append("page cannot be combined with cursor (the cursor knows its page)")
    try:
        after = cursors.decode(token)
    except ValueError:
        problems.append("cursor is not one this endpoint made")
        return None
    if after.fingerprint != fingerprint:
        problems.append("cursor was made for another sort, order, search or filters")
        return None
    return after


def _plural(kind: str) -> str:
    return {"boolean": "true/false values"}.get(kind, EXPECTED[kind].split(" ", 1)[1] + "s")
