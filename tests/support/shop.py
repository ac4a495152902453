"""The `shop` module of docs/rest-api.md: its `products` entity as the manifest gives it and the
module table behind it, shared by tests/executor/entities/test_e2e.py and bench/entities_bench.py.
"""

from __future__ import annotations

from typing import Any

from proxy.executor.data_access import physical_table
from tests.support.gateway import MODULE_ID

PRODUCTS_TABLE = physical_table(MODULE_ID, "products")
ALL_OPERATIONS = ["list", "read", "create", "update", "delete"]

# docs/rest-api.md's table without its UNIQUE (site_id, sku) and indexes (each user adds the
# ones it needs); `cost` has a default so a test can see that a hidden field is never written.
CREATE_PRODUCTS = f"""
CREATE TABLE {PRODUCTS_TABLE} (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  site_id uuid NOT NULL,
  name text NOT NULL,
  sku text,
  price numeric(10, 2),
  cost numeric(10, 2) DEFAULT 1.50,
  status text NOT NULL DEFAULT 'draft',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
"""


def products(operations: list[str] = ALL_OPERATIONS) -> dict[str, Any]:
    """The `products` entity of shop.yaml, allowing `operations`."""
    return {
        "name": "products",
        "table": "products",
        "fields": [
            {"name": "id", "type": "uuid", "readonly": True},
            {"name": "name", "type": "string", "required": True},
            {"name": "sku", "type": "string"},
            {"name": "price", "type": "decimal"},
            {"name": "cost", "type": "decimal", "hidden": True},
            {"name": "status", "type": "string", "readonly": True},
            {"name": "created_at", "type": "timestamptz", "readonly": True},
            {"name": "updated_at", "type": "timestamptz", "readonly": True},
        ],
        "operations": list(operations),
        "filters": ["name", "sku", "price"],
        "sortable": ["name", "price", "created_at"],
        "searchable": ["name", "sku"],
    }


def shop_manifest(
    operations: list[str] = ALL_OPERATIONS, routes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """shop.yaml: the `shop` module with its products entity and, when given, `routes`."""
    module: dict[str, Any] = {"id": MODULE_ID, "name": "shop", "entities": [products(operations)]}
    if routes:
        module["routes"] = routes
    return {"modules": [module]}
