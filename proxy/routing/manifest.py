"""The routes manifest: YAML whose fields are the seed's column names.

    modules:
      - id: <uuid>              # module_id
        name: crm               # optional URL alias: /api/modules/crm/...
        upstream: http://crm:8000
        routes:
          - {path: /contacts/:id, method: GET, handler_type: proxy}
        entities: [...]         # REST CRUD over the module's tables (entities_manifest.py)
    api_keys: [...]             # embedded mode only (module_api_keys rows)

`modgate routes apply -f FILE` writes it to Postgres; the embedded default serves it directly.
Every error names the field it is about, e.g. `modules[0].routes[2].method: expected ...`.

`{listen}` in an `upstream` or `handler_url` is the serving gateway's own public address (its
`listen` setting, a wildcard host as loopback), so a manifest can route back into the gateway
whatever port it runs on (the embedded demo's /via-proxy does). Only a gateway serving the file
knows that address: `routes apply` refuses it (rows in Postgres are served by many gateways).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from proxy.auth.key_fields import InvalidKeyField, canonical_uuid, parse_scope
from proxy.errors import ManifestError
from proxy.interning import interned
from proxy.routing.entities_manifest import parse_entities
from proxy.routing.model import ENCODED_SLASHES, HANDLER_TYPES, METHODS, ModuleSpec, RouteSpec
from proxy.yaml_text import InvalidYaml, parse_yaml

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_MODULE_KEYS = frozenset({"id", "name", "upstream", "routes", "entities"})
_TOP_KEYS = frozenset({"modules", "api_keys"})
LISTEN_PLACEHOLDER = "{listen}"


@dataclass(frozen=True, slots=True)
class Manifest:
    modules: tuple[ModuleSpec, ...]
    api_keys: tuple[Mapping[str, Any], ...] = ()


def load_manifest(path: str | Path, *, listen: str | None = None) -> Manifest:
    """Read and validate a manifest file; ManifestError names the file and the field.
    `listen`: the host:port that `{listen}` stands for (None: `{listen}` is refused)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{source}: file not found") from None
    except OSError as exc:
        raise ManifestError(f"{source}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{source}: not UTF-8 text") from None
    return parse_manifest_text(text, source, listen=listen)


def parse_manifest_text(
    text: str, source: str = "<manifest>", *, listen: str | None = None
) -> Manifest:
    try:
        data = parse_yaml(text)
    except InvalidYaml as exc:
        raise ManifestError(f"{source}: {exc}") from None
    return parse_manifest(data, source, listen=listen)


def parse_manifest(
    data: object, source: str = "<manifest>", *, listen: str | None = None
) -> Manifest:
    """Validate already-parsed YAML/JSON data into a Manifest."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ManifestError(f"{source}: expected a mapping with a 'modules' list at the top")
    _reject_unknown(data, _TOP_KEYS, source, "")
    modules_raw = data.get("modules") or []
    if not isinstance(modules_raw, list):
        raise ManifestError(f"{source}: modules: expected a list, got {_kind(modules_raw)}")
    modules: list[ModuleSpec] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(modules_raw):
        where = f"modules[{i}]"
        module = _parse_module(raw, source, where, listen)
        for key in (module.id, module.name):
            if key is None:
                continue
            if key in seen:
                raise ManifestError(
                    f"{source}: {where}: module '{key}' is already defined at {seen[key]}"
                )
            seen[key] = where
        modules.append(module)
    keys_raw = data.get("api_keys") or []
    if not isinstance(keys_raw, list) or not all(isinstance(k, Mapping) for k in keys_raw):
        raise ManifestError(f"{source}: api_keys: expected a list of mappings")
    return Manifest(modules=tuple(modules), api_keys=tuple(keys_raw))


def _parse_module(raw: object, source: str, where: str, listen: str | None) -> ModuleSpec:
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{source}: {where}: expected a mapping, got {_kind(raw)}")
    _reject_unknown(raw, _MODULE_KEYS, source, where)
    module_id = _uuid(raw.get("id"), source, f"{where}.id")
    name = raw.get("name")
    bad_name = (
        not isinstance(name, str) or not _NAME_RE.match(name) or canonical_uuid(name) is not None
    )
    if name is not None and bad_name:
        raise ManifestError(
            f"{source}: {where}.name: expected a lowercase slug like 'crm' "
            f"(letters, digits, '-', '_'; not a UUID), got {name!r}"
        )
    upstream_raw = _with_listen(raw.get("upstream"), listen, source, f"{where}.upstream")
    upstream = _optional_url(upstream_raw, source, f"{where}.upstream")
    routes_raw = raw.get("routes") or []
    if not isinstance(routes_raw, list):
        raise ManifestError(f"{source}: {where}.routes: expected a list, got {_kind(routes_raw)}")
    routes = tuple(
        _parse_route(r, source, f"{where}.routes[{j}]", upstream, listen)
        for j, r in enumerate(routes_raw)
    )
    entities = parse_entities(raw.get("entities"), source, f"{where}.entities")
    return ModuleSpec(id=module_id, name=name, upstream=upstream, routes=routes, entities=entities)


def _parse_route(
    raw: object, source: str, where: str, upstream: str | None, listen: str | None
) -> RouteSpec:
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{source}: {where}: expected a mapping, got {_kind(raw)}")
    _reject_unknown(raw, _ROUTE_FIELDS.keys(), source, where)
    values: dict[str, Any] = {}
    for key, check in _ROUTE_FIELDS.items():
        if key in raw:
            value = raw[key]
            if key == "handler_url":
                value = _with_listen(value, listen, source, f"{where}.{key}")
            values[key] = check(value, source, f"{where}.{key}")
    for required in ("path", "method"):
        if required not in values:
            raise ManifestError(f"{source}: {where}: missing required field '{required}'")
    route = RouteSpec(**values)
    _check_handler(route, upstream, source, where)
    return route


def _check_handler(route: RouteSpec, upstream: str | None, source: str, where: str) -> None:
    kind = route.handler_type
    if kind == "proxy" and route.handler_url is None and upstream is None:
        raise ManifestError(
            f"{source}: {where}: a proxy route needs handler_url or the module's upstream"
        )
    if kind in ("static", "function") and route.handler_code is None:
        raise ManifestError(f"{source}: {where}: a {kind} route needs handler_code")


# -- field checkers: (value, source, where) -> normalized value ---------------------------------


def _fail(source: str, where: str, expected: str, value: object) -> ManifestError:
    return ManifestError(f"{source}: {where}: expected {expected}, got {value!r}")


def _path(value: object, source: str, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _fail(source, where, "a path starting with '/'", value)
    return value


def _method(value: object, source: str, where: str) -> str:
    if isinstance(value, str) and value.upper() in METHODS:
        return interned(value.upper())
    raise _fail(source, where, f"one of {', '.join(METHODS)}", value)


def _handler_type(value: object, source: str, where: str) -> str:
    if value in HANDLER_TYPES:
        return interned(str(value))
    raise _fail(source, where, f"one of {', '.join(HANDLER_TYPES)}", value)


def _encoded_slashes(value: object, source: str, where: str) -> str:
    if value in ENCODED_SLASHES:
        return interned(str(value))
    raise _fail(source, where, f"one of {', '.join(ENCODED_SLASHES)}", value)


def _text(value: object, source: str, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _fail(source, where, "a string", value)


def _bool(value: object, source: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail(source, where, "true or false", value)


def _scopes(value: object, source: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(source, where, "a list of scope strings", value)
    try:  # the one scope rule, the API keys' (they reach upstreams in the X-Scopes line)
        return interned(tuple(parse_scope(scope) for scope in value))
    except InvalidKeyField as exc:
        raise ManifestError(f"{source}: {where}: {exc.reason}") from None


def _positive_or_null(value: object, source: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise _fail(source, where, "a positive integer or null", value)


def _non_negative(value: object, source: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _fail(source, where, "an integer >= 0", value)


def _json_schema(value: object, source: str, where: str) -> Any:
    if value is None or isinstance(value, Mapping):
        return value
    raise _fail(source, where, "a mapping (JSON schema) or null", value)


def _with_listen(value: object, listen: str | None, source: str, where: str) -> object:
    """`value` with `{listen}` replaced by the serving gateway's host:port."""
    if not isinstance(value, str) or LISTEN_PLACEHOLDER not in value:
        return value
    if listen is None:
        raise ManifestError(
            f"{source}: {where}: {LISTEN_PLACEHOLDER} is resolved only by a gateway serving "
            "this file (routes_file) on a fixed port (listen not port 0); write the address"
        )
    return value.replace(LISTEN_PLACEHOLDER, listen)


def _optional_url(value: object, source: str, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            url = URL(value)
        except (ValueError, TypeError):
            url = None
        if url is not None and url.scheme in ("http", "https") and url.host:
            return value
    raise _fail(source, where, "an http:// or https:// URL", value)


_Check = Callable[[object, str, str], Any]
_ROUTE_FIELDS: dict[str, _Check] = {
    "path": _path,
    "method": _method,
    "handler_type": _handler_type,
    "handler_code": _text,
    "handler_url": _optional_url,
    "requires_auth": _bool,
    "required_scopes": _scopes,
    "rate_limit_per_minute": _positive_or_null,
    "cache_ttl_seconds": _non_negative,
    "summary": _text,
    "description": _text,
    "request_schema": _json_schema,
    "response_schema": _json_schema,
    "forward_credentials": _bool,
    "encoded_slashes": _encoded_slashes,
}


def _uuid(value: object, source: str, where: str) -> str:
    normal = canonical_uuid(value)
    if normal is None:
        raise _fail(source, where, "a UUID", value)
    return normal


def _reject_unknown(raw: Mapping[Any, Any], allowed: Any, source: str, where: str) -> None:
    for key in raw:
        if key not in allowed:
            prefix = f"{where}: " if where else ""
            raise ManifestError(f"{source}: {prefix}unknown field {key!r}")


def _kind(value: object) -> str:
    return type(value).__name__
