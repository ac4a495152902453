"""A module's `entities:` in the manifest (and as the store keeps them): validated into
`EntityConfig`s, every refusal naming the field, e.g.
`modules[0].entities[1].fields[2].type: expected one of uuid, ..., got 'money'`.

    entities:
      - name: products            # the REST path segment (/products) and the scopes' suffix
        table: products           # logical table (default: name); physical mod_<8>_products
        fields:
          - {name: title, type: string, required: true}
          - {name: secret, type: text, hidden: true}
        operations: [list, read, create, update, delete]   # default: all five
        filters: [title]          # fields a list may filter on
        sortable: [title]
        searchable: [title]       # string or text fields only

Names, tables and fields are SQL identifiers (`^[a-z_][a-z0-9_]{0,62}$`), as `ctx.db` requires;
the table leaves room for its `mod_<8 chars>_` prefix. A hidden field cannot be filtered,
sorted or searched on: its values would leak through which rows come back. array, jsonb and
object fields have no order, so they cannot be sortable; `created_at` and `updated_at` are
timestamps (a list sorts by `created_at` by default, an update sets `updated_at = now()`); and
an entity shows at least one field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.errors import ManifestError
from proxy.routing.entities import FIELD_TYPES, OPERATIONS, EntityConfig, FieldConfig

IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Postgres truncates identifiers past 63 bytes; `mod_` + 8 chars of the module id + `_` precede.
MAX_TABLE_LENGTH = 63 - len("mod_12345678_")
TEXT_TYPES = ("string", "text")
# Types with an order (not array, jsonb, object): the pool sorts and keyset-pages by them.
SORTABLE_TYPES = tuple(t for t in FIELD_TYPES if t not in ("array", "jsonb", "object"))
TIMESTAMP_TYPES = ("timestamp", "timestamptz")
# Fields the pool gives a meaning: the default sort, and the column an update sets to now().
TIMESTAMP_FIELDS = ("created_at", "updated_at")

_ENTITY_KEYS = frozenset(
    {"name", "table", "fields", "operations", "filters", "sortable", "searchable"}
)
_FIELD_KEYS = frozenset({"name", "type", "required", "readonly", "hidden"})


def parse_entities(raw: object, source: str, where: str) -> tuple[EntityConfig, ...]:
    """A module's `entities` list (None: none); `where` is the list's own path."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ManifestError(f"{source}: {where}: expected a list, got {type(raw).__name__}")
    entities: list[EntityConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        entity = parse_entity(item, source, f"{where}[{i}]")
        if entity.name in seen:
            raise ManifestError(
                f"{source}: {where}[{i}].name: entity '{entity.name}' is already defined at "
                f"{where}[{seen[entity.name]}]"
            )
        seen[entity.name] = i
        entities.append(entity)
    return tuple(entities)


def parse_entity(raw: object, source: str, where: str) -> EntityConfig:
    """One entity: the manifest's form, which is also `EntityConfig.as_json()`."""
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{source}: {where}: expected a mapping, got {type(raw).__name__}")
    _reject_unknown(raw, _ENTITY_KEYS, source, where)
    if "name" not in raw:
        raise ManifestError(f"{source}: {where}: missing required field 'name'")
    name = _identifier(raw["name"], source, f"{where}.name")
    table = _identifier(raw.get("table", name), source, f"{where}.table")
    if len(table) > MAX_TABLE_LENGTH:
        raise ManifestError(
            f"{source}: {where}.table: at most {MAX_TABLE_LENGTH} characters (the physical "
            f"table is mod_<8 chars of the module id>_{table}), got {len(table)}"
        )
    fields = _fields(raw.get("fields"), source, f"{where}.fields")
    by_name = {field.name: field for field in fields}
    operations = _operations(raw.get("operations", list(OPERATIONS)), source, where)
    return EntityConfig(
        name=name,
        table=table,
        fields=fields,
        operations=operations,
        filters=_field_list(raw.get("filters"), by_name, source, f"{where}.filters"),
        sortable=_field_list(
            raw.get("sortable"), by_name, source, f"{where}.sortable", SORTABLE_TYPES, "sorted"
        ),
        searchable=_field_list(
            raw.get("searchable"), by_name, source, f"{where}.searchable", TEXT_TYPES, "searched"
        ),
    )


def _fields(raw: object, source: str, where: str) -> tuple[FieldConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(source, where, "a non-empty list of fields", raw)
    fields: list[FieldConfig] = []
    seen: dict[str, int] = {}
    for j, item in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(item, Mapping):
            raise ManifestError(f"{source}: {at}: expected a mapping, got {type(item).__name__}")
        _reject_unknown(item, _FIELD_KEYS, source, at)
        for required in ("name", "type"):
            if required not in item:
                raise ManifestError(f"{source}: {at}: missing required field '{required}'")
        name = _identifier(item["name"], source, f"{at}.name")
        if name in seen:
            raise ManifestError(
                f"{source}: {at}.name: field '{name}' is already defined at {where}[{seen[name]}]"
            )
        seen[name] = j
        kind = item["type"]
        if kind not in FIELD_TYPES:
            raise _fail(source, f"{at}.type", f"one of {', '.join(FIELD_TYPES)}", kind)
        fields.append(
            FieldConfig(
                name=name,
                type=str(kind),
                required=_bool(item.get("required", False), source, f"{at}.required"),
                readonly=_bool(item.get("readonly", False), source, f"{at}.readonly"),
                hidden=_bool(item.get("hidden", False), source, f"{at}.hidden"),
            )
        )
        if name in TIMESTAMP_FIELDS and kind not in TIMESTAMP_TYPES:
            raise ManifestError(
                f"{source}: {at}.type: {name} must be timestamp or timestamptz (lists sort by "
                f"created_at, updates set updated_at), got {kind!r}"
            )
    if all(field.hidden for field in fields):
        raise ManifestError(
            f"{source}: {where}: every field is hidden; an entity shows at least one field"
        )
    return tuple(fields)


def _operations(raw: object, source: str, where: str) -> tuple[str, ...]:
    at = f"{where}.operations"
    if not isinstance(raw, list) or not raw:
        raise _fail(source, at, f"a non-empty list of {', '.join(OPERATIONS)}", raw)
    for k, operation in enumerate(raw):
        if operation not in OPERATIONS:
            raise _fail(source, f"{at}[{k}]", f"one of {', '.join(OPERATIONS)}", operation)
        if operation in raw[:k]:
            raise ManifestError(f"{source}: {at}[{k}]: '{operation}' is listed twice")
    # In OPERATIONS' order, whatever the manifest's: the compiled routes do not depend on it.
    return tuple(operation for operation in OPERATIONS if operation in raw)


def _field_list(
    raw: object,
    fields: Mapping[str, FieldConfig],
    source: str,
    where: str,
    types: tuple[str, ...] | None = None,
    use: str = "",
) -> tuple[str, ...]:
    """Names of declared fields (filters, sortable, searchable), each once, none hidden, each
    of `types` when given (`use` says what the list does with them, for the message)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(source, where, "a list of field names", raw)
    names: list[str] = []
    for k, name in enumerate(raw):
        at = f"{where}[{k}]"
        field = fields.get(name) if isinstance(name, str) else None
        if field is None:
            raise _fail(source, at, "a field of this entity", name)
        if field.hidden:
            raise ManifestError(f"{source}: {at}: '{name}' is a hidden field")
        if types is not None and field.type not in types:
            allowed = " or ".join(types) if len(types) <= 2 else "scalar (not array, jsonb, object)"
            raise ManifestError(
                f"{source}: {at}: '{name}' is {_article(field.type)} {field.type} field; only "
                f"{allowed} fields can be {use}"
            )
        if name in names:
            raise ManifestError(f"{source}: {at}: '{name}' is listed twice")
        names.append(name)
    return tuple(names)


def _article(word: str) -> str:
    return "an" if word[0] in "aeio" else "a"  # a uuid, an integer


def _identifier(value: object, source: str, where: str) -> str:
    if isinstance(value, str) and IDENTIFIER_RE.fullmatch(value):
        return value
    raise _fail(source, where, "a lowercase identifier like 'order_items'", value)


def _bool(value: object, source: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail(source, where, "true or false", value)


def _fail(source: str, where: str, expected: str, value: object) -> ManifestError:
    return ManifestError(f"{source}: {where}: expected {expected}, got {value!r}")


def _reject_unknown(
    raw: Mapping[Any, Any], allowed: frozenset[str], source: str, where: str
) -> None:
    for key in raw:
        if key not in allowed:
            raise ManifestError(f"{source}: {where}: unknown field {key!r}")
