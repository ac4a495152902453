"""Which headers cross the gateway, in each direction.

Hop-by-hop headers (RFC 9110 §7.6.1) and any header named in `Connection` describe one
connection and never cross. Identity headers are set by the gateway only: a client that sends
`X-User-Id` must not be able to impersonate anyone, so those are stripped on the way in.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
IDENTITY = frozenset({"x-module-id", "x-site-id", "x-user-id", "x-api-key-id", "x-scopes"})

# Set by the gateway itself on the way to an upstream (Host comes from the upstream URL).
_GATEWAY_SET = frozenset(
    {"host", "expect", "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
)
REQUEST_DROP = HOP_BY_HOP | IDENTITY | _GATEWAY_SET
RESPONSE_DROP = HOP_BY_HOP | {"x-request-id"}


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def filter_headers(
    headers: CIMultiDictProxy[str], drop: frozenset[str], keep_out: Iterable[str] = ()
) -> CIMultiDict[str]:
    """Copy `headers` without `drop`, the names listed in Connection, and `keep_out`."""
    listed = _connection_tokens(headers)
    extra = frozenset(k.lower() for k in keep_out)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lname = name.lower()
        if lname in drop or lname in listed or lname in extra:
            continue
        out.add(name, value)
    return out
