"""Entities in Postgres (`module_entities`, migration 0004): written with a manifest's routes,
read with the modules, and checked against the tables they expose before they are written.

Strategy: a row's `config` is `EntityConfig.as_json()`; it is validated again when read
(`parse_entity`, the manifest's own rules), since any writer may have put it there. A row that
does not validate is left out with an ERROR naming it: its routes answer 404 rather than serve
a configuration nobody checked. Writes follow the routes' (one statement per kind, fed by
`unnest`, skipping rows whose config already matches); an entity no longer listed for a module
is deleted (no log row points at it).

The table check resolves each entity's physical table the way `ctx.db` does (its name from
`executor/data_access.physical_table`, looked up through the search path) and reads its
columns from the catalog: the table must exist, have `site_id` (every row belongs to a site),
`id` (read, update and delete find rows by it; a list's keyset cursor breaks ties with it, so
every entity needs it), and a column of a compatible type for each field (`created_at` and
`updated_at` are timestamp fields by the manifest's rule, so their columns are timestamps).

The check also completes the entity with what the table has: a `created_at` or `updated_at`
timestamp column the entity does not declare becomes a readonly field of the stored entity
(the issue's contract: a list sorts by `created_at` and an update sets `updated_at` "when the
table has it"; the pool sees only the stored entity, so the table's columns must be in it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from proxy.errors import ManifestError
from proxy.executor.data_access import physical_table
from proxy.routing.entities import EntityConfig, FieldConfig
from proxy.routing.entities_manifest import TIMESTAMP_FIELDS, TIMESTAMP_TYPES, parse_entity
from proxy.routing.model import ModuleSpec

log = logging.getLogger("modgate.store")

_SELECT = "SELECT module_id::text AS module_id, name, config::text AS config FROM module_entities"
_ORDER = ' ORDER BY module_id, name COLLATE "C"'
SELECT_ALL_ENTITIES = _SELECT + _ORDER
SELECT_SOME_ENTITIES = _SELECT + " WHERE module_id = ANY($1::uuid[])" + _ORDER

UPSERT_ENTITIES = """
INSERT INTO module_entities AS e (module_id, name, config, updated_at)
SELECT u.module_id, u.name, u.config::jsonb, NOW()
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(module_id, name, config)
ON CONFLICT (module_id, name) DO UPDATE SET config = EXCLUDED.config, updated_at = NOW()
WHERE e.config IS DISTINCT FROM EXCLUDED.config
RETURNING module_id::text
"""

DELETE_MISSING_ENTITIES = """
DELETE FROM module_entities AS e
WHERE e.module_id = ANY($1::uuid[])
  AND NOT EXISTS (
    SELECT 1 FROM unnest($2::uuid[], $3::text[]) AS k(module_id, name)
    WHERE k.module_id = e.module_id AND k.name = e.name)
RETURNING module_id::text
"""

# The columns of each named table as ctx.db would find it (search path), domains as their base
# type: (table, column, base type name, its category, the type as Postgres writes it).
_COLUMNS = """
SELECT t.name AS table_name, a.attname AS column_name, bt.typname AS type_name,
       bt.typcategory::text AS category, format_type(a.atttypid, a.atttypmod) AS shown
FROM unnest($1::text[]) AS t(name)
JOIN pg_attribute a
  ON a.attrelid = to_regclass(quote_ident(t.name)) AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type ty ON ty.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END
"""

_INTEGERS = frozenset({"int2", "int4", "int8"})
_NUMBERS = _INTEGERS | {"numeric", "float4", "float8"}
_JSON = frozenset({"json", "jsonb"})
# Field type -> (base type names, type categories) of the columns that can hold its values.
COLUMN_TYPES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "uuid": (frozenset({"uuid"}), frozenset()),
    "string": (frozenset(), frozenset("S")),  # text, varchar, char, name, citext
    "text": (frozenset(), frozenset("S")),
    "integer": (_INTEGERS, frozenset()),
    "number": (_NUMBERS, frozenset()),
    "decimal": (_NUMBERS, frozenset()),
    "boolean": (frozenset({"bool"}), frozenset()),
    "timestamp": (frozenset({"timestamp", "timestamptz"}), frozenset()),
    "timestamptz": (frozenset({"timestamptz"}), frozenset()),
    "array": (_JSON, frozenset("A")),
    "jsonb": (_JSON, frozenset()),
    "object": (_JSON, frozenset()),
}


def entities_from_rows(rows: Sequence[Any]) -> dict[str, list[EntityConfig]]:
    """module id -> its entities, from module_entities rows; rows that do not validate are left
    out, each with an ERROR."""
    found: dict[str, list[EntityConfig]] = {}
    for row in rows:
        module_id, name = row["module_id"], row["name"]
        where = f"module_entities row ({module_id}, {name})"
        try:
            entity = parse_entity(orjson.loads(row["config"]), "module_entities", where)
        except (ManifestError, orjson.JSONDecodeError) as exc:
            log.error("entity left out, its routes are not served: %s", exc)
            continue
        if entity.name != name:
            log.error("entity left out, its routes are not served: %s names %r", where, entity.name)
            continue
        found.setdefault(module_id, []).append(entity)
    return found


def entity_columns(modules: Sequence[ModuleSpec]) -> list[list[Any]]:
    """The manifest's entities as UPSERT_ENTITIES' parallel arrays: module ids, names, configs."""
    columns: list[list[Any]] = [[], [], []]
    for module in modules:
        for entity in module.entities:
            columns[0].append(module.id)
            columns[1].append(entity.name)
            columns[2].append(orjson.dumps(entity.as_json()).decode())
    return columns


async def check_entity_tables(conn: Any, modules: Sequence[ModuleSpec]) -> list[ModuleSpec]:
    """`modules`, their entities completed with the table's `created_at`/`updated_at`
    (with_table_timestamps), or ManifestError naming every entity whose table or fields the
    database does not have."""
    wanted = [
        (module, entity, physical_table(module.id, entity.table))
        for module in modules
        for entity in module.entities
    ]
    if not wanted:
        return list(modules)
    rows = await conn.fetch(_COLUMNS, sorted({table for _, _, table in wanted}))
    tables: dict[str, dict[str, Any]] = {}
    for row in rows:
        tables.setdefault(row["table_name"], {})[row["column_name"]] = row
    problems: list[str] = []
    for module, entity, table in wanted:
        where = f"module {module.name or module.id}: entity '{entity.name}'"
        columns = tables.get(table)
        if columns is None:
            problems.append(
                f"{where}: table {table} does not exist (ctx.db's table '{entity.table}' of this "
                "module)"
            )
            continue
        if "site_id" not in columns:
            problems.append(f"{where}: table {table} has no site_id column")
        if "id" not in columns:
            problems.append(
                f"{where}: table {table} has no id column (read, update and delete find rows "
                "by id; a list's cursor orders by it)"
            )
        for field in entity.fields:
            column = columns.get(field.name)
            if column is None:
                problems.append(f"{where}: field '{field.name}': table {table} has no such column")
                continue
            names, categories = COLUMN_TYPES[field.type]
            if column["type_name"] not in names and column["category"] not in categories:
                problems.append(
                    f"{where}: field '{field.name}' is {field.type}, but column "
                    f"{table}.{field.name} is {column['shown']}"
                )
    if problems:
        raise ManifestError("; ".join(problems))
    return [
        dataclasses.replace(
            module,
            entities=tuple(
                with_table_timestamps(entity, tables[physical_table(module.id, entity.table)])
                for entity in module.entities
            ),
        )
        if module.entities
        else module
        for module in modules
    ]


def with_table_timestamps(entity: EntityConfig, columns: Mapping[str, Any]) -> EntityConfig:
    """`entity` with a readonly field for each `created_at`/`updated_at` timestamp column of
    its table that it does not declare (a column of another type is left out: it has no
    meaning to the pool)."""
    declared = {field.name for field in entity.fields}
    added = tuple(
        FieldConfig(name=name, type=columns[name]["type_name"], readonly=True)
        for name in TIMESTAMP_FIELDS
        if name not in declared
        and name in columns
        and columns[name]["type_name"] in TIMESTAMP_TYPES
    )
    return dataclasses.replace(entity, fields=entity.fields + added) if added else entity
