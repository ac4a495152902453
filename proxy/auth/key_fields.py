"""The one reading of an API key's fields, whichever door they come in by: the CLI and the
store (`modgate keys`), the embedded manifest's `api_keys`, and (origins only) the settings'
`cors_origins`.

The gateway compares these fields as strings on the hot path (the request's `Origin` header
against a key's allowed origins, CIDR membership against parsed networks), so each must be
stored in the one form a client's request will carry. Two loaders that disagreed (the manifest
kept `https://App.Example:443` as written while the CLI stored `https://app.example`) refused
the same key from a browser in one mode and not the other.

Each `parse_*` function returns the stored form or raises `InvalidKeyField`, whose `field` is
the parameter's name and `reason` the one text for that rule; each door only says where the
value came from (`--scope: ...`, `gw.yaml: api_keys[0].scopes: ...`). The scope, UUID and
network rules are also the routes manifest's and the settings' (`parse_scope`, `canonical_uuid`,
`normalize_network`): one rule per kind of value, whichever table it ends up in.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit

from proxy.errors import ConfigError
from proxy.http.urls import DEFAULT_PORTS

# The seed's column defaults: what a key gets when its writer sets no limit (None: unlimited).
DEFAULT_RATE_LIMIT_PER_MINUTE: Final = 60
DEFAULT_RATE_LIMIT_PER_DAY: Final = 10_000
INT4_MAX: Final = 2_147_483_647  # the INTEGER columns' bound (limits, request_count)
MAX_EXPIRES_IN_DAYS: Final = 36_500  # 100 years; keeps NOW() + interval far from overflow

_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")
# Canonical lowercase, as str(uuid.UUID(...)) writes it: the common case, checked without
# building a UUID object; other spellings go through uuid.UUID.
_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
).fullmatch
_NOT_A_SCOPE = "is not a scope (no spaces or control characters, not empty)"
_NOT_A_NETWORK = "is not an IP address or CIDR network"
_NOT_AN_ORIGIN = "is not an origin: expected '*' or scheme://host[:port] without a path"
_NOT_A_CONSUMER_SCOPE = "is not a consumer scope: expected read, write, delete or admin"
_NOT_AN_ENDPOINT = (
    "is not an endpoint: expected '*' or 'METHOD /path' (METHOD one of GET POST PUT PATCH "
    "DELETE or *; each path segment literal text of letters, digits and -._~!$&'()+,;=@, "
    ":name for a parameter, or a last segment * as in a route's own path)"
)

# An API consumer's scopes (EM-33): each grants one kind of operation on the whole module.
CONSUMER_SCOPES: Final = ("read", "write", "delete", "admin")
DEFAULT_CONSUMER_SCOPES: Final = ("read",)  # the seed's column default
DEFAULT_ALLOWED_ENDPOINTS: Final = ("*",)
ENDPOINT_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "*"})
# A path segment of an endpoint: what a route template's segment can be (proxy/routing/
# matcher.py) in the alphabet a person writes routes in: a literal (RFC 3986's pchar without
# '%', which a template never holds decoded, and ':'), a `:name` parameter, or a `*` that
# only a route's last segment can be (it names that wildcard route, not a prefix).
_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@-]+").fullmatch
_PARAM_SEGMENT = re.compile(r":[A-Za-z_][A-Za-z0-9_]*").fullmatch


class InvalidKeyField(ConfigError, ValueError):
    """A refused value; `field` is the parameter's name, `reason` says what was expected."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def canonical_uuid(value: object) -> str | None:
    """The canonical lowercase form of a `uuid.UUID` or of text in any spelling `uuid.UUID`
    reads; None for anything else (a number is not taken for the hex digits it prints as)."""
    if isinstance(value, str):
        if _CANONICAL_UUID(value):
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            return None
    return str(value) if isinstance(value, uuid.UUID) else None


def parse_uuid(value: object, field: str) -> str:
    """`canonical_uuid`, or InvalidKeyField."""
    normal = canonical_uuid(value)
    if normal is None:
        raise InvalidKeyField(field, f"{value!r} is not a UUID")
    return normal


def parse_name(value: object) -> str:
    """A key's or a consumer's name: not empty once stripped, no control character (names are
    printed in tables, where CR, LF or ESC would rewrite the terminal)."""
    name = value.strip() if isinstance(value, str) else ""
    if not name:
        raise InvalidKeyField("name", "must not be empty")
    return _without_controls(name, "name")


def parse_description(value: object) -> str | None:
    """A consumer's description: None (none) or text without control characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidKeyField("description", f"expected text, got {value!r}")
    return _without_controls(value, "description")


def _without_controls(text: str, field: str) -> str:
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidKeyField(field, f"{text!r} holds a control character (CR, LF, ESC, ...)")
    return text


def parse_whole_number(value: object, field: str, maximum: int) -> int | None:
    """None (no limit) or a whole number from 1 to `maximum`; True is no number here."""
    if value is None or (type(value) is int and 0 < value <= maximum):
        return value
    raise InvalidKeyField(field, f"expected a whole number from 1 to {maximum}, got {value!r}")


def parse_rate_limit(value: object, field: str) -> int | None:
    return parse_whole_number(value, field, INT4_MAX)


def parse_scope(value: object, field: str = "scopes") -> str:
    """One scope as written, or InvalidKeyField: not empty, no whitespace, no control character.
    The one rule for key scopes, route `required_scopes` and `jwt_default_scopes`."""
    normal = _scope(value) if isinstance(value, str) else None
    if normal is None:
        raise InvalidKeyField(field, f"{value!r} {_NOT_A_SCOPE}")
    return normal


def parse_scopes(values: object) -> tuple[str, ...]:
    return _each(values, "scopes", _scope, _NOT_A_SCOPE)


def parse_consumer_scopes(values: object) -> tuple[str, ...]:
    """An API consumer's scopes: each one of CONSUMER_SCOPES."""
    return _each(values, "scopes", _consumer_scope, _NOT_A_CONSUMER_SCOPE)


def parse_endpoints(values: object) -> tuple[str, ...]:
    """An API consumer's `allowed_endpoints`: '*' or 'METHOD /path', in the stored form
    (method upper-cased, one space, no trailing slash)."""
    return _each(values, "allowed_endpoints", normalize_endpoint, _NOT_AN_ENDPOINT)


def normalize_endpoint(text: str) -> str | None:
    """'*', or 'METHOD /path' with METHOD in ENDPOINT_METHODS and each segment a literal, a
    `:name` or (last) `*` ('get  /products/' -> 'GET /products'); None when `text` is neither."""
    text = text.strip()
    if text == "*":
        return text
    method, _, path = text.partition(" ")
    method, path = method.upper(), path.strip()
    if method not in ENDPOINT_METHODS or not path.startswith("/"):
        return None
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]  # one trailing slash, as route templates ignore it
    segments = path[1:].split("/") if len(path) > 1 else []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if not (
            _LITERAL_SEGMENT(segment)
            or _PARAM_SEGMENT(segment)
            or (segment == "*" and index == last)
        ):
            return None
    return f"{method} {path}"


def parse_networks(values: object) -> tuple[str, ...]:
    return _each(values, "allowed_ips", normalize_network, _NOT_A_NETWORK)


def parse_origins(values: object) -> tuple[str, ...]:
    return _each(values, "allowed_origins", normalize_origin, _NOT_AN_ORIGIN)


def normalize_origin(text: str) -> str | None:
    """`*`, or scheme://host[:port] lowercased and without a default port (browsers send the
    Origin header in exactly that form); None when `text` is not an origin (a path, a query,
    userinfo, whitespace)."""
    text = text.strip()
    if text == "*":
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if (
        not _SCHEME_RE.fullmatch(scheme)
        or not host
        or "@" in parts.netloc
        or parts.path
        or parts.query
        or parts.fragment
        or text.endswith(("?", "#"))
        or any(c.isspace() for c in text)
    ):
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if port is None or DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalize_network(text: str) -> str | None:
    """An address or CIDR network in canonical form ('2001:DB8::0001' -> '2001:db8::1',
    '10.1.2.3/8' -> '10.0.0.0/8'; a bare address keeps no /length); None when malformed."""
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text.strip(), strict=False))
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def _scope(text: str) -> str | None:
    # Scopes reach upstreams space-separated in X-Scopes: whitespace would split one, CR LF
    # would end the header line, NUL and other controls are refused by upstream parsers.
    # isprintable() is False for every whitespace character but " " and for every control.
    return text if text and text.isprintable() and " " not in text else None


def _consumer_scope(text: str) -> str | None:
    scope = text.strip().lower()
    return scope if scope in CONSUMER_SCOPES else None


def _each(
    values: object, field: str, normalize: Callable[[str], str | None], reason: str
) -> tuple[str, ...]:
    """Each value normalized, duplicates dropped, order kept; None is an empty list."""
    if values is None:
        return ()
    if isinstance(values, str | bytes):  # a lone string would be taken character by character
        raise InvalidKeyField(field, "expected a list of strings, got a single string")
    if not isinstance(values, Iterable) or isinstance(values, Mapping):
        raise InvalidKeyField(field, f"expected a list of strings, got {values!r}")
    out: dict[str, None] = {}
    for value in values:
        normal = normalize(value) if isinstance(value, str) else None
        if normal is None:
            raise InvalidKeyField(field, f"{value!r} {reason}")
        out[normal] = None
    return tuple(out)
