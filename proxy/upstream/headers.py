"""Which headers cross the gateway, in each direction.

Hop-by-hop headers (RFC 9110 §7.6.1) and any header named in `Connection` describe one
connection and never cross. Identity headers are set by the gateway only: a client that sends
`X-User-Id` must not be able to impersonate anyone, so those are stripped on the way in.
"""

from __future__ import annotations

from collections.abc import Sequence

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
# Compared with raw header names as they come off the wire (bytes, lowercased).
REQUEST_DROP_RAW = frozenset(name.encode() for name in HOP_BY_HOP | IDENTITY | _GATEWAY_SET)
RESPONSE_DROP_RAW = frozenset(name.encode() for name in HOP_BY_HOP | {"x-request-id"})


def _raw_connection_tokens(raw: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    return frozenset(
        token.strip().lower()
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    )


def request_header_lines(
    raw: Sequence[tuple[bytes, bytes]], has_connection: bool, keep_out: frozenset[bytes]
) -> list[bytes]:
    """The client's headers to forward, as wire lines (`Name: value\r\n`), without the drop
    set, the names its Connection header lists and `keep_out` (lowercase names).

    Works on the raw pairs the server parsed, so nothing is decoded and re-encoded; llhttp has
    refused CR, LF and NUL in them already."""
    drop = REQUEST_DROP_RAW
    if has_connection:
        drop = drop | _raw_connection_tokens(raw)
    if keep_out:
        drop = drop | keep_out
    return [name + b": " + value + b"\r\n" for name, value in raw if name.lower() not in drop]


def response_header_pairs(
    raw: Sequence[tuple[bytes, bytes]], has_connection: bool
) -> list[tuple[str, str]]:
    """An upstream's response headers to relay (decoded as aiohttp decodes them), without
    hop-by-hop headers, the names its Connection header lists and X-Request-ID."""
    drop = RESPONSE_DROP_RAW
    if has_connection:
        drop = drop | _raw_connection_tokens(raw)
    return [
        (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        for name, value in raw
        if name.lower() not in drop
    ]
