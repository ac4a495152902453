"""How one setting's value is read: a `Rule` per kind of value, shared by every source.

Strings are accepted everywhere because the environment only has strings and YAML users quote
numbers; bools are refused where a number is wanted (True is an int). A rule's `parse` returns
the typed value or raises ValueError/TypeError; `expected` completes the one-line message
`<key>: expected <what>, got <value> (from <source>)` that proxy/settings.py writes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from proxy.auth.key_fields import normalize_network, normalize_origin, parse_scope


@dataclass(frozen=True, slots=True)
class Rule:
    """How one setting is parsed: `parse` returns the typed value or raises ValueError/TypeError."""

    parse: Callable[[object], object]
    expected: str  # completes "expected ..." in the error message
    optional: bool = False  # None or "" means unset (None)


# A host name or IPv4 address; IPv6 must be bracketed so the port separator is unambiguous.
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")


def parse_address(text: str) -> tuple[str, int]:
    """Split "host:port" ("[::1]:8080" for IPv6) into (host, port); ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not _PORT_RE.fullmatch(port) or int(port) > 65535:  # 0 = ephemeral
        raise ValueError(text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError
    elif not _HOST_RE.fullmatch(host):
        raise ValueError(text)
    return host, int(port)


def _address(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    parse_address(value.strip())
    return value.strip()  # kept as written; Settings derives host and port from it once


def integer(minimum: int, *, optional: bool = False) -> Rule:
    def parse(value: object) -> int:
        if isinstance(value, str):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(value)
        return value

    return Rule(parse, f"an integer >= {minimum}", optional=optional)


def number(minimum: float, *, inclusive: bool) -> Rule:
    def parse(value: object) -> float:
        if isinstance(value, str):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(value)
        parsed = float(value)
        if not math.isfinite(parsed) or parsed < minimum or (parsed == minimum and not inclusive):
            raise ValueError(value)
        return parsed

    return Rule(parse, f"a number {'>=' if inclusive else '>'} {minimum:g}")


def choice(*options: str) -> Rule:
    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise ValueError(value)

    return Rule(parse, "one of " + ", ".join(options))


def url(*schemes: str, optional: bool = True) -> Rule:
    prefixes = tuple(f"{scheme}://" for scheme in schemes)

    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip().lower().startswith(prefixes):
            return value.strip()
        raise ValueError(value)

    listed = ", ".join(prefixes[:-1]) + " or " + prefixes[-1]
    return Rule(parse, f"a {listed} URL", optional=optional)


def key_bytes(size: int) -> Rule:
    """Base64 text of exactly `size` bytes (kept as the text; decoded where it is used)."""

    def parse(value: object) -> str:
        if isinstance(value, str):
            try:
                if len(base64.b64decode(value.strip(), validate=True)) == size:
                    return value.strip()
            except binascii.Error:
                pass
        raise ValueError(value)

    return Rule(parse, f"{size} bytes in base64", optional=True)


def text(expected: str, *, optional: bool = False) -> Rule:
    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise ValueError(value)

    return Rule(parse, expected, optional=optional)


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _boolean(value: object) -> bool:
    # str(True) == "True", so YAML bools, YAML 1/0 and the environment's words all go through
    # the same table.
    if isinstance(value, int | str) and (word := str(value).strip().lower()) in _BOOL_WORDS:
        return _BOOL_WORDS[word]
    raise ValueError(value)


def list_of(item: Callable[[str], str], expected: str) -> Rule:
    """A list from YAML, or comma-separated text from the environment; stored as a tuple."""

    def parse(value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise TypeError(value)
        out = []
        for raw in items:
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError(value)
            out.append(item(raw.strip()))
        return tuple(out)

    return Rule(parse, expected)


def cidr(value: str) -> str:
    # The key fields' rule (allowed_ips): an address or a network, in canonical form.
    normal = normalize_network(value)
    if normal is None:
        raise ValueError(value)
    return normal


def origin(value: str) -> str:
    # The form browsers send in Origin (proxy/auth/key_fields.py): compared as strings.
    normal = normalize_origin(value)
    if normal is None or not (normal == "*" or normal.startswith(("http://", "https://"))):
        raise ValueError(value)
    return normal


def scope(value: str) -> str:
    # The one scope rule (proxy/auth/key_fields.py): jwt_default_scopes reach upstreams in the
    # X-Scopes line. Its InvalidKeyField is a ValueError, so the message is this module's.
    return parse_scope(value)


ADDRESS = Rule(_address, "host:port (e.g. 127.0.0.1:8080)")
BOOLEAN = Rule(_boolean, "true or false")
POSITIVE = number(0, inclusive=False)  # seconds, rates: "a number > 0"
NON_NEGATIVE = number(0, inclusive=True)
