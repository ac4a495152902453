"""The entity the tests share: a products table of module MODULE, as a manifest would give it."""

from __future__ import annotations

from typing import Any

from proxy.executor.data_access import physical_table
from proxy.executor.entities.schema import EntitySchema, schema_of

MODULE = "6f1c2a9e-3b7d-4c1a-9e2f-0a1b2c3d4e5f"
SITE_A = "aaaaaaaa-0000-4000-8000-000000000001"
SITE_B = "bbbbbbbb-0000-4000-8000-000000000002"
TABLE = physical_table(MODULE, "products")

SCHEMA_SQL = f"""
CREATE TABLE {TABLE} (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), site_id uuid NOT NULL,
  name text NOT NULL, sku text, price numeric(12, 2), stock integer, active boolean,
  tags text[], meta jsonb, secret text DEFAULT 'hush', note varchar(10),
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz,
  UNIQUE (site_id, sku));
"""

ENTITY: dict[str, Any] = {
    "name": "products",
    "table": "products",
    "fields": [
        {"name": "id", "type": "uuid", "readonly": True},
        {"name": "name", "type": "string", "required": True},
        {"name": "sku", "type": "string"},
        {"name": "price", "type": "decimal"},
        {"name": "stock", "type": "integer"},
        {"name": "active", "type": "boolean"},
        {"name": "tags", "type": "array"},
        {"name": "meta", "type": "jsonb"},
        {"name": "secret", "type": "text", "hidden": True},
        {"name": "note", "type": "string"},
        {"name": "created_at", "type": "timestamptz", "readonly": True},
        {"name": "updated_at", "type": "timestamptz", "readonly": True},
    ],
    "operations": ["list", "read", "create", "update", "delete"],
    "filters": ["name", "sku", "price", "stock", "active", "tags", "meta", "created_at"],
    "sortable": ["name", "price", "stock", "created_at"],
    "searchable": ["name", "sku"],
}
VISIBLE = [f["name"] for f in ENTITY["fields"] if not f.get("hidden")]


def schema(entity: dict[str, Any] | None = None) -> EntitySchema:
    return schema_of(entity or ENTITY, MODULE)


def payload(
    operation: str,
    *,
    site: str | None = SITE_A,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    row_id: str | None = None,
    method: str | None = None,
    entity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An entity call as the gateway posts it."""
    methods = {
        "list": "GET",
        "read": "GET",
        "create": "POST",
        "update": "PATCH",
        "delete": "DELETE",
    }
    return {
        "kind": "entity",
        "module_id": MODULE,
        "site_id": site,
        "user_id": None,
        "api_key_id": None,
        "consumer_id": None,
        "scopes": [],
        "route_id": None,
        "entity": entity or ENTITY,
        "operation": operation,
        "params": {"id": row_id} if row_id is not None else {},
        "query": [list(pair) for pair in query or []],
        "body": body,
        "method": method or methods[operation],
    }
