"""A module's entities (EM-33's `EntityConfig`): the data the compiler turns into REST routes and
the handler pool turns into SQL. Plain immutable data; parsed by the manifest and the store,
compiled into routes by `routing/table.py`, executed by `executor/entities/`.

The contract between the gateway and the handler pool: a generated route carries its entity and
operation; the gateway posts the call (the entity's `as_json()`, the operation, the caller's
site, user, module key and API consumer ids and scopes, the id, the query's pairs and the body;
the fields are listed in `executor/entities/call.py`) to the pool, which answers in the seed's
shapes (list: `{"data": [...], "pagination": {...}}`; read, create, update: `{"data": {...}}`;
delete: `{"success": true}`) or in the error shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# The seed's field types. Each maps to the Postgres types its column may have (checked at apply
# time when a database is given) and to how input values are validated (executor/entities/).
FIELD_TYPES: Final = (
    "uuid",
    "string",
    "text",
    "integer",
    "number",
    "decimal",
    "boolean",
    "timestamp",
    "timestamptz",
    "array",
    "jsonb",
    "object",
)

OPERATIONS: Final = ("list", "read", "create", "update", "delete")

# Filter operators of `<field>[<op>]=<value>` in a list's query.
FILTER_OPERATORS: Final = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "like", "ilike", "is")

# The scope each operation requires, `{name}` being the entity's name.
SCOPE_OF_OPERATION: Final = {
    "list": "read:{name}",
    "read": "read:{name}",
    "create": "write:{name}",
    "update": "write:{name}",
    "delete": "delete:{name}",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldConfig:
    """One column an entity exposes."""

    name: str
    type: str
    required: bool = False
    readonly: bool = False  # never written from input
    hidden: bool = False  # never in an answer

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "readonly": self.readonly,
            "hidden": self.hidden,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityConfig:
    """One entity: `table` is the logical name; the physical table is the one `ctx.db` uses
    (`executor/data_access.physical_table`), with a `site_id` column."""

    name: str
    table: str
    fields: tuple[FieldConfig, ...]
    operations: tuple[str, ...] = OPERATIONS
    filters: tuple[str, ...] = ()
    sortable: tuple[str, ...] = ()
    searchable: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The JSON form, as the store keeps it and as the pool receives it."""
        return {
            "name": self.name,
            "table": self.table,
            "fields": [field.as_json() for field in self.fields],
            "operations": list(self.operations),
            "filters": list(self.filters),
            "sortable": list(self.sortable),
            "searchable": list(self.searchable),
        }
