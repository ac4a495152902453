"""The REST routes an entity generates (EM-33's REST generator, as routes of the module's table).

    GET    /{name}       list     read:{name}
    POST   /{name}       create   write:{name}
    GET    /{name}/:id   read     read:{name}
    PATCH  /{name}/:id   update   write:{name}
    PUT    /{name}/:id   update   write:{name}
    DELETE /{name}/:id   delete   delete:{name}

only for the entity's listed operations; always authenticated. They are ordinary `RouteSpec`s
of handler type `entity` (never stored: the module's entities are, and every load generates
them again), so matching, auth, scopes, limits, logs and metrics treat them like any route.
A generated route that would take the place of a hand-registered one (same method, same path
up to parameter names) is refused when the table compiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from proxy.errors import RouteConflictError
from proxy.routing.entities import SCOPE_OF_OPERATION, EntityConfig
from proxy.routing.model import ENTITY_HANDLER, RouteSpec

# operation -> (method, whether the path ends in /:id), in the order routes are generated.
ROUTES_OF_OPERATION: dict[str, tuple[tuple[str, bool], ...]] = {
    "list": (("GET", False),),
    "create": (("POST", False),),
    "read": (("GET", True),),
    "update": (("PATCH", True), ("PUT", True)),
    "delete": (("DELETE", True),),
}
# Operations whose call carries the request's JSON body.
BODY_OPERATIONS = frozenset({"create", "update"})

_SUMMARIES = {
    "list": "List {name}",
    "create": "Create a {name} row",
    "read": "Get a {name} row by id",
    "update": "Update a {name} row",
    "delete": "Delete a {name} row",
}


@dataclass(frozen=True, slots=True)
class EntityRoute:
    """One generated route: its spec, its entity and the operation it performs."""

    spec: RouteSpec
    entity: EntityConfig
    operation: str


def entity_routes(entity: EntityConfig) -> Iterator[EntityRoute]:
    """The routes of `entity`'s listed operations."""
    scopes = {op: (scope.format(name=entity.name),) for op, scope in SCOPE_OF_OPERATION.items()}
    for operation, routes in ROUTES_OF_OPERATION.items():
        if operation not in entity.operations:
            continue
        for method, by_id in routes:
            spec = RouteSpec(
                path=f"/{entity.name}/:id" if by_id else f"/{entity.name}",
                method=method,
                handler_type=ENTITY_HANDLER,
                requires_auth=True,
                required_scopes=scopes[operation],
                summary=_SUMMARIES[operation].format(name=entity.name),
            )
            yield EntityRoute(spec, entity, operation)


def check_no_clash(hand: Iterable[RouteSpec], generated: Iterable[EntityRoute]) -> None:
    """RouteConflictError when a generated route has a hand-registered route's method and path
    (parameter names aside: `/products/:pid` is `/products/:id`)."""
    taken = {(route.method, _shape(route.path)): route.path for route in hand}
    for route in generated:
        spec = route.spec
        path = taken.get((spec.method, _shape(spec.path)))
        if path is not None:
            raise RouteConflictError(
                f"{spec.method} {spec.path} of entity '{route.entity.name}' "
                f"({route.operation}) clashes with the hand-registered route "
                f"{spec.method} {path}; remove that route or the operation"
            )


def _shape(path: str) -> str:
    """A path with its parameter names and a trailing slash left out."""
    segments = path.strip("/").split("/")
    return "/".join(":" if segment.startswith(":") else segment for segment in segments)
