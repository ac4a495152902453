"""The pool's view of one entity, made from the payload's `EntityConfig` JSON (the manifest's own
parser checks it, so the gateway and the pool read entities by one rule) once per distinct
entity: every call carries it, and checking it again costs ~50 us against ~1 us to look it up.

Invariants the statements rely on: every name here passed the identifier rule, the physical
table is `ctx.db`'s (`mod_<8 chars of the module id>_<table>`), `site_id` is never visible as
input (not writable, whatever the config says), and the row key is the `id` column.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from proxy.errors import BadRequest, ConfigError
from proxy.executor.data_access import QueryRefused, physical_table
from proxy.routing.entities import EntityConfig, FieldConfig
from proxy.routing.entities_manifest import parse_entity

ID = "id"
SITE = "site_id"
CREATED_AT = "created_at"
UPDATED_AT = "updated_at"


@dataclass(frozen=True, slots=True)
class EntitySchema:
    config: EntityConfig
    physical: str
    fields: Mapping[str, FieldConfig]
    visible: tuple[str, ...]  # columns an answer carries, in the config's order
    writable: tuple[str, ...]  # fields input may set: not readonly, hidden, site_id, updated_at
    default_sort: str  # created_at when declared (and not hidden), else id
    touches_updated_at: bool  # an update sets updated_at = now()

    @property
    def name(self) -> str:
        return self.config.name


def schema_of(raw: object, module_id: str) -> EntitySchema:
    """The schema of the payload's `entity`, or BadRequest (the gateway sent a broken call)."""
    try:
        text = orjson.dumps(raw)
    except TypeError:
        raise BadRequest("Malformed execute request: entity is not JSON") from None
    return _schema(text, module_id)


# Keyed by the entity's JSON text, so a changed entity is a new entry; bounded. A refused
# entity raises and is not kept.
@functools.lru_cache(maxsize=1024)
def _schema(text: bytes, module_id: str) -> EntitySchema:
    try:
        config = parse_entity(orjson.loads(text), "execute request", "entity")
        physical = physical_table(module_id, config.table)
    except (ConfigError, QueryRefused) as exc:
        raise BadRequest(f"Malformed execute request: {exc}") from None
    return schema_from_config(config, physical)


def schema_from_config(config: EntityConfig, physical: str) -> EntitySchema:
    fields = {field.name: field for field in config.fields}
    touches = UPDATED_AT in fields
    created = fields.get(CREATED_AT)
    return EntitySchema(
        config=config,
        physical=physical,
        fields=fields,
        visible=tuple(f.name for f in config.fields if not f.hidden),
        writable=tuple(
            f.name
            for f in config.fields
            if not (f.readonly or f.hidden or f.name == SITE or (touches and f.name == UPDATED_AT))
        ),
        default_sort=CREATED_AT if created is not None and not created.hidden else ID,
        touches_updated_at=touches,
    )
