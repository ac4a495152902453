"""Entities in the manifest and the REST routes the compiler generates from them (issue 16)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.errors import ManifestError, RouteConflictError
from proxy.routing.entities import EntityConfig, FieldConfig
from proxy.routing.entities_manifest import parse_entity
from proxy.routing.manifest import parse_manifest
from proxy.routing.model import ModuleSpec, RouteSpec
from proxy.routing.table import compile_module

MODULE_ID = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"

PRODUCTS: dict[str, Any] = {
    "name": "products",
    "table": "catalog_items",
    "fields": [
        {"name": "id", "type": "uuid", "readonly": True},
        {"name": "title", "type": "string", "required": True},
        {"name": "notes", "type": "text"},
        {"name": "price", "type": "decimal"},
        {"name": "cost", "type": "decimal", "hidden": True},
    ],
    "operations": ["delete", "list", "read", "create", "update"],
    "filters": ["price", "title"],
    "sortable": ["price"],
    "searchable": ["title", "notes"],
}


def module(*entities: dict[str, Any], routes: list[dict[str, Any]] | None = None) -> ModuleSpec:
    data = {"modules": [{"id": MODULE_ID, "name": "shop", "entities": list(entities)}]}
    if routes is not None:
        data["modules"][0]["routes"] = routes
    (spec,) = parse_manifest(data).modules
    return spec


def test_an_entity_parses_into_the_shared_model() -> None:
    (entity,) = module(PRODUCTS).entities
    assert entity == EntityConfig(
        name="products",
        table="catalog_items",
        fields=(
            FieldConfig(name="id", type="uuid", readonly=True),
            FieldConfig(name="title", type="string", required=True),
            FieldConfig(name="notes", type="text"),
            FieldConfig(name="price", type="decimal"),
            FieldConfig(name="cost", type="decimal", hidden=True),
        ),
        # In the model's order, whatever the manifest's.
        operations=("list", "read", "create", "update", "delete"),
        filters=("price", "title"),
        sortable=("price",),
        searchable=("title", "notes"),
    )
    # The stored form parses back to the same entity (the store reads rows with parse_entity).
    assert parse_entity(orjson.loads(orjson.dumps(entity.as_json())), "s", "w") == entity


def test_defaults_table_is_the_name_and_every_operation() -> None:
    (entity,) = module({"name": "tags", "fields": [{"name": "label", "type": "string"}]}).entities
    assert (entity.table, entity.operations) == (
        "tags",
        ("list", "read", "create", "update", "delete"),
    )
    assert entity.fields == (FieldConfig(name="label", type="string"),)
    assert (entity.filters, entity.sortable, entity.searchable) == ((), (), ())


def test_users_cannot_declare_entity_routes_by_hand() -> None:
    with pytest.raises(ManifestError, match=r"handler_type: expected one of function, proxy"):
        module(routes=[{"path": "/x", "method": "GET", "handler_type": "entity"}])


def _routes(spec: ModuleSpec) -> dict[tuple[str, str], Any]:
    """(method, template) -> compiled route, for the paths an entity `products` generates."""
    matcher = compile_module(spec).matcher
    found: dict[tuple[str, str], Any] = {}
    for path in ("/products", "/products/7"):
        for method in matcher.allowed_methods(path):
            if method != "HEAD":
                route = matcher.match(path, method).payload
                found[(method, route.template)] = route
    return found


def test_every_operation_generates_its_routes_with_its_scope() -> None:
    routes = _routes(module(PRODUCTS))
    summary = {
        key: (route.operation, route.spec.required_scopes, route.spec.requires_auth)
        for key, route in routes.items()
    }
    assert summary == {
        ("GET", "/products"): ("list", ("read:products",), True),
        ("POST", "/products"): ("create", ("write:products",), True),
        ("GET", "/products/:id"): ("read", ("read:products",), True),
        ("PATCH", "/products/:id"): ("update", ("write:products",), True),
        ("PUT", "/products/:id"): ("update", ("write:products",), True),
        ("DELETE", "/products/:id"): ("delete", ("delete:products",), True),
    }
    for route in routes.values():
        assert route.spec.handler_type == "entity"
        assert route.target is None and route.static is None
        assert route.reads_body == (route.operation in ("create", "update"))
        call = route.pool_call
        assert (call["kind"], call["operation"], call["route_id"]) == (
            "entity",
            route.operation,
            None,
        )
        # The entity's JSON is serialised once, at compile time, and sent as it is.
        assert isinstance(call["entity"], orjson.Fragment)
        assert orjson.loads(orjson.dumps(call["entity"])) == route.entity.as_json()


def test_only_listed_operations_generate_routes() -> None:
    spec = module({**PRODUCTS, "operations": ["list", "read"]})
    assert sorted(_routes(spec)) == [("GET", "/products"), ("GET", "/products/:id")]
    table = compile_module(spec)
    assert len(table) == 2
    assert table.matcher.allowed_methods("/products/7") == ("GET", "HEAD")


def test_hand_routes_live_beside_generated_ones() -> None:
    static = {"method": "GET", "handler_type": "static", "handler_code": "x"}
    spec = module(
        PRODUCTS,
        routes=[{"path": "/products/export", **static}, {"path": "/products/:id/notes", **static}],
    )
    table = compile_module(spec)
    assert len(table) == 8
    assert table.match("/products/export", "GET").payload.static is not None
    assert table.match("/products/7", "GET").payload.operation == "read"
    assert table.match("/products/7/notes", "GET").payload.static is not None


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        (
            "GET",
            "/products",
            "module shop: GET /products of entity 'products' (list) clashes with the "
            "hand-registered route GET /products; remove that route or the operation",
        ),
        (
            "PUT",
            "/products/:pid/",
            "module shop: PUT /products/:id of entity 'products' (update) clashes with the "
            "hand-registered route PUT /products/:pid/; remove that route or the operation",
        ),
    ],
)
def test_a_clash_with_a_hand_registered_route_is_refused(
    method: str, path: str, message: str
) -> None:
    spec = module(
        PRODUCTS,
        routes=[{"path": path, "method": method, "handler_type": "static", "handler_code": "x"}],
    )
    with pytest.raises(RouteConflictError) as caught:
        compile_module(spec)
    assert str(caught.value) == message


def test_a_hand_route_of_another_method_is_no_clash() -> None:
    spec = ModuleSpec(
        id=MODULE_ID,
        routes=(RouteSpec(path="/products", method="POST", handler_code="x"),),
        entities=(module({**PRODUCTS, "operations": ["list"]}).entities),
    )
    assert len(compile_module(spec)) == 2
