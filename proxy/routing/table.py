"""A module's compiled route table: an immutable snapshot built once per (re)load.

Everything a request needs from a route is precomputed here (the static body and its headers,
the upstream URL pieces) so the hot path only matches and reads attributes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import orjson

from proxy.errors import BadRequest, RouteConflictError
from proxy.routing.entities import EntityConfig
from proxy.routing.entity_routes import BODY_OPERATIONS, check_no_clash, entity_routes
from proxy.routing.matcher import WILDCARD_KEY, Match, PathMatcher, normalize_template
from proxy.routing.model import ModuleSpec, RouteSpec


@dataclass(frozen=True, slots=True)
class StaticBody:
    """A `static` route's response: handler_code as the body, JSON when it parses as JSON."""

    body: bytes
    content_type: str

    @classmethod
    def from_code(cls, code: str) -> StaticBody:
        body = code.encode()
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            return cls(body, "text/plain; charset=utf-8")
        return cls(body, "application/json")


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where a `proxy` route forwards.

    `keep_path` (module upstream): the client's normalised path after /api/modules/{id} is
    appended to `base`. Otherwise (handler_url): `base` is the route's URL, whose `:name`
    segments are filled from the matched params (percent-encoded) and whose `*` takes the rest
    of the normalised path as the client sent it (an encoded slash stays encoded; the decoded
    `*` param cannot tell "a%2Fb" from "a/b"). The client's query string is always appended.
    """

    base: str
    keep_path: bool
    placeholders: tuple[str, ...] = ()
    # How many path segments precede the route's trailing `*` (where its raw value starts).
    rest_index: int = 0
    # scheme://[userinfo@]host:port, where the upstream pool connects (the pool's Endpoint
    # names it in metrics and logs without the userinfo), and what follows it in `base`: both
    # split once here, not per request.
    origin: str = field(init=False)
    path_base: str = field(init=False)

    def __post_init__(self) -> None:
        scheme, _, rest = self.base.partition("://")
        origin = f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "path_base", self.base[len(origin) :])

    def path_for(self, raw_path: str, query: str, params: dict[str, str]) -> str:
        """The request target (path and query) to send to `origin`."""
        if self.keep_path:
            path = self.path_base + raw_path
        elif self.placeholders:
            path = self.path_base.format(
                *[
                    _raw_rest(raw_path, self.rest_index)
                    if name == WILDCARD_KEY
                    else _encode_param(params[name])
                    for name in self.placeholders
                ]
            )
        else:
            path = self.path_base
        if query:
            path += ("&" if "?" in path else "?") + query
        return path if path.startswith("/") else "/" + path

    def url_for(self, raw_path: str, query: str, params: dict[str, str]) -> str:
        return self.origin + self.path_for(raw_path, query, params)

    @classmethod
    def for_handler_url(cls, handler_url: str, rest_index: int = 0) -> UpstreamTarget:
        scheme, sep, rest = handler_url.partition("://")
        authority, slash, path_and_query = rest.partition("/")
        path, qmark, query = path_and_query.partition("?")
        names: list[str] = []
        segments: list[str] = []
        for segment in path.split("/"):
            if segment.startswith(":") or segment == "*":
                names.append(segment.lstrip(":"))
                segments.append("{}")
            else:
                segments.append(segment.replace("{", "{{").replace("}", "}}"))
        if not names:
            return cls(handler_url, keep_path=False)
        escaped_query = query.replace("{", "{{").replace("}", "}}")
        base = f"{scheme}{sep}{authority}{slash}{'/'.join(segments)}{qmark}{escaped_query}"
        return cls(base, keep_path=False, placeholders=tuple(names), rest_index=rest_index)


def _encode_param(value: str) -> str:
    if value == "." or value == "..":
        # Normalisation removes dot segments before matching; this holds the line regardless.
        raise BadRequest("A path parameter cannot be a dot segment")
    return quote(value, safe="")


def _raw_rest(raw_path: str, rest_index: int) -> str:
    """The path after its first `rest_index` segments, as sent (normalised, still encoded)."""
    parts = raw_path[1:].split("/", rest_index)
    return parts[rest_index] if len(parts) > rest_index else ""


class PoolCall:
    """What a route the handler pool serves (function, entity) carries: the fields of its pool
    payload that are the same for every call (the handler's key and code, or the entity's JSON
    and the operation), so a request adds only its caller, params, query and body. Kept out of
    CompiledRoute's own slots: most routes are proxy routes, and bench/memory_bench.py counts
    every slot of every route."""

    __slots__ = ("entity", "fields", "handler_key", "operation", "reads_body")

    def __init__(
        self,
        fields: Mapping[str, Any],
        *,
        handler_key: str | None = None,
        entity: EntityConfig | None = None,
        operation: str | None = None,
    ) -> None:
        self.fields = fields
        self.handler_key = handler_key
        self.entity = entity  # an entity route's entity and operation (list read create ...)
        self.operation = operation
        self.reads_body = entity is None or operation in BODY_OPERATIONS


_NO_POOL_CALL: Mapping[str, Any] = MappingProxyType({})


class CompiledRoute:
    """One route ready to serve: its spec, its template (for logs/metrics) and its target:
    a static body, an upstream, or a call to the handler pool (`pool`)."""

    __slots__ = ("pool", "spec", "static", "target", "template")

    def __init__(
        self,
        spec: RouteSpec,
        module_target: UpstreamTarget | None,
        *,
        entity: EntityConfig | None = None,
        operation: str | None = None,
        entity_json: orjson.Fragment | None = None,
    ) -> None:
        self.spec = spec
        self.template = normalize_template(spec.path)
        self.static: StaticBody | None = None
        self.target: UpstreamTarget | None = None
        self.pool: PoolCall | None = None
        if entity is not None:
            fields = {
                "kind": "entity",
                "route_id": spec.id,
                "entity": entity_json or orjson.Fragment(orjson.dumps(entity.as_json())),
                "operation": operation,
            }
            self.pool = PoolCall(fields, entity=entity, operation=operation)
        elif spec.handler_type == "function":
            # The pool caches compiled handlers by this key: a code change is a new key.
            digest = hashlib.sha256((spec.handler_code or "").encode()).hexdigest()[:16]
            key = f"{spec.id or spec.method + ' ' + spec.path}:{digest}"
            fields = {"route_id": spec.id, "handler_key": key, "code": spec.handler_code}
            self.pool = PoolCall(fields, handler_key=key)
        elif spec.handler_type == "static":
            self.static = StaticBody.from_code(spec.handler_code or "")
        elif spec.handler_type == "proxy":
            if spec.handler_url:
                segments = self.template.count("/")
                rest_index = segments - 1 if self.template.endswith("/*") else 0
                self.target = UpstreamTarget.for_handler_url(spec.handler_url, rest_index)
            elif module_target is not None:
                self.target = module_target  # one per module, shared by its routes
            else:
                raise RouteConflictError(
                    f"{spec.method} {spec.path}: a proxy route needs handler_url "
                    "or the module's upstream"
                )

    @property
    def pool_call(self) -> Mapping[str, Any]:
        return self.pool.fields if self.pool is not None else _NO_POOL_CALL

    @property
    def entity(self) -> EntityConfig | None:
        return self.pool.entity if self.pool is not None else None

    @property
    def operation(self) -> str | None:
        return self.pool.operation if self.pool is not None else None

    @property
    def reads_body(self) -> bool:
        return self.pool is None or self.pool.reads_body

    @property
    def handler_key(self) -> str | None:
        return self.pool.handler_key if self.pool is not None else None

    def __repr__(self) -> str:
        return f"<CompiledRoute {self.spec.method} {self.template} {self.spec.handler_type}>"


class ModuleTable:
    """An immutable, versioned snapshot of one module's routes."""

    __slots__ = ("id", "matcher", "name", "upstream", "version")

    def __init__(self, spec: ModuleSpec, version: int) -> None:
        self.id = spec.id
        self.name = spec.name
        self.upstream = spec.upstream
        self.version = version
        upstream = (
            UpstreamTarget(spec.upstream.rstrip("/"), keep_path=True) if spec.upstream else None
        )
        routes = [CompiledRoute(r, upstream) for r in spec.routes]
        for entity in spec.entities:
            generated = list(entity_routes(entity))
            check_no_clash(spec.routes, generated)
            # One JSON text per entity, shared by its routes and sent as it is on every call.
            entity_json = orjson.Fragment(orjson.dumps(entity.as_json()))
            routes.extend(
                CompiledRoute(
                    g.spec, None, entity=entity, operation=g.operation, entity_json=entity_json
                )
                for g in generated
            )
        # The template, not the path: the matcher then keeps the same string object.
        self.matcher: PathMatcher[CompiledRoute] = PathMatcher.build(
            (route.template, route.spec.method, route) for route in routes
        )

    def match(self, raw_path: str, method: str) -> Match[CompiledRoute]:
        return self.matcher.match(raw_path, method)

    def __len__(self) -> int:
        return len(self.matcher)

    def __repr__(self) -> str:
        label = f"{self.id} ({self.name})" if self.name else self.id
        return f"<ModuleTable {label} v{self.version} routes={len(self)}>"


def compile_module(spec: ModuleSpec, version: int = 0) -> ModuleTable:
    """Compile a module's routes; RouteConflictError names the module and the conflict."""
    try:
        return ModuleTable(spec, version)
    except RouteConflictError as exc:
        raise RouteConflictError(f"module {spec.name or spec.id}: {exc}") from None
