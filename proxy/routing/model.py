"""The route definitions as the seed's tables hold them: one `ModuleSpec` per module, one
`RouteSpec` per `module_api_routes` row. Plain immutable data; compiled elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.routing.entities import EntityConfig

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
HANDLER_TYPES = ("function", "proxy", "static")
# The handler type of the routes the compiler generates from a module's entities; never a
# manifest's or a row's (module_api_routes' CHECK refuses it too).
ENTITY_HANDLER = "entity"
ENCODED_SLASHES = ("reject", "keep")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    """One route, with the seed's column names and defaults."""

    path: str
    method: str
    handler_type: str = "function"
    handler_code: str | None = None
    handler_url: str | None = None
    requires_auth: bool = True
    required_scopes: tuple[str, ...] = ()
    rate_limit_per_minute: int | None = None
    cache_ttl_seconds: int = 0
    summary: str | None = None
    description: str | None = None
    request_schema: Any = None
    response_schema: Any = None
    # modgate's own column (migration 0002): forward the caller's X-API-Key / Bearer token.
    forward_credentials: bool = False
    # modgate's own column (migration 0003): "keep" lets %2F / %5C through, still encoded.
    encoded_slashes: str = "reject"
    id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleSpec:
    """A module: its id (a UUID), an optional URL alias, its default upstream, its routes and
    its entities (compiled into more routes, `routing/entity_routes.py`)."""

    id: str
    name: str | None = None
    upstream: str | None = None
    routes: tuple[RouteSpec, ...] = field(default_factory=tuple)
    entities: tuple[EntityConfig, ...] = ()
