"""The one reading of a key's address fields, whichever door they come in by: the CLI and the
store (`modgate keys`), the embedded manifest's `api_keys`, and the settings' `cors_origins`.

The gateway compares these fields as strings on the hot path (the request's `Origin` header
against a key's allowed origins, CIDR membership against parsed networks), so each must be
stored in the one form a client's request will carry. Two loaders that disagreed (the manifest
kept `https://App.Example:443` as written while the CLI stored `https://app.example`) refused
the same key from a browser in one mode and not the other.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")


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
