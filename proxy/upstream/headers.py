"""Which headers cross the gateway, in each direction, and which framing a request may have.

Hop-by-hop headers (RFC 9110 §7.6.1) and any header named in `Connection` describe one
connection and never cross. Identity headers are set by the gateway only: a client that sends
`X-User-Id` must not be able to impersonate anyone, so those are stripped on the way in.

Framing belongs to the gateway: the client's Content-Length and Transfer-Encoding never cross
(the gateway writes its own from the message it parsed), and a `Connection` header that names
them or Host is refused, since the only reason to send one is to make some hop lose the
message's framing or authority. `Forwarded` and `X-Real-IP` say who the client is: they cross
only from a peer in `trusted_proxies`.

A request header whose name holds "_" never crosses (nginx's `underscores_in_headers off`,
Envoy's `headers_with_underscores_action: DROP_HEADER`): CGI, WSGI and many frameworks read
`X_User_Id` as `X-User-Id`, so it would walk around the identity stripping.

What the gateway adds on the way to an upstream: X-Forwarded-For (the chain so far only from a
trusted proxy), -Proto and -Host; X-Request-ID and the caller's identity (X-Module-Id,
X-Site-Id, X-User-Id, X-Api-Key-Id for a module API key, X-Consumer-Id for an API consumer,
X-Scopes). The credential the caller used stays at the gateway unless the route forwards
credentials, and an upstream URL with its own credentials gets those instead of the client's
Authorization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from multidict import CIMultiDictProxy

from proxy.errors import BadFraming, InternalError, UnsupportedTransferEncoding

if TYPE_CHECKING:
    from proxy.auth.principal import Principal

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
IDENTITY = frozenset(
    {"x-module-id", "x-site-id", "x-user-id", "x-api-key-id", "x-consumer-id", "x-scopes"}
)

# Set by the gateway itself on the way to an upstream (Host comes from the upstream URL, the
# framing from the parsed message).
_GATEWAY_SET = frozenset(
    {
        "host", "expect", "content-length", "x-request-id", "x-forwarded-for",
        "x-forwarded-proto", "x-forwarded-host",
    }
)  # fmt: skip
# Who the client is, as earlier proxies saw it: believed only from a trusted proxy.
_CLIENT_ADDRESS = frozenset({"forwarded", "x-real-ip"})
# What a Connection header may never name (the message's framing and authority).
PROTECTED_FROM_CONNECTION = frozenset({b"content-length", b"transfer-encoding", b"host"})
# Compared with raw header names as they come off the wire (bytes, lowercased).
REQUEST_DROP_TRUSTED = frozenset(name.encode() for name in HOP_BY_HOP | IDENTITY | _GATEWAY_SET)
REQUEST_DROP_RAW = REQUEST_DROP_TRUSTED | frozenset(name.encode() for name in _CLIENT_ADDRESS)
# An upstream's Server header goes too (as Envoy and nginx do): it names the module's software
# and version, and the gateway's own (`modgate`, proxy/http/server_header.py) takes its place.
RESPONSE_DROP_RAW = frozenset(name.encode() for name in HOP_BY_HOP | {"x-request-id", "server"})


def _raw_connection_tokens(raw: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    return frozenset(
        token.strip().lower()
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    )


def check_framing(headers: CIMultiDictProxy[str]) -> None:
    """Refuse a request whose framing the gateway will not re-frame: a Connection header naming
    Content-Length, Transfer-Encoding or Host (400), a transfer coding other than one
    `chunked` (501, RFC 9112 section 6.1). llhttp has refused CL+TE and bad lengths already."""
    if "Transfer-Encoding" in headers:
        codings = [
            token.strip().lower()
            for value in headers.getall("Transfer-Encoding")
            for token in value.split(",")
        ]
        if codings != ["chunked"]:
            raise UnsupportedTransferEncoding()
    if "Connection" in headers:
        for value in headers.getall("Connection"):
            for token in value.split(","):
                if token.strip().lower().encode() in PROTECTED_FROM_CONNECTION:
                    raise BadFraming(
                        "The Connection header cannot name Content-Length, "
                        "Transfer-Encoding or Host"
                    )


def request_header_lines(
    raw: Sequence[tuple[bytes, bytes]],
    has_connection: bool,
    keep_out: frozenset[bytes],
    *,
    trusted_peer: bool = False,
) -> list[bytes]:
    """The client's headers to forward, as wire lines (`Name: value\r\n`), without the drop
    set, the names its Connection header lists, `keep_out` (lowercase names) and any name
    holding "_"; Forwarded and X-Real-IP only when the peer is a trusted proxy.

    Works on the raw pairs the server parsed, so nothing is decoded and re-encoded; llhttp has
    refused CR, LF and NUL in them already."""
    drop = REQUEST_DROP_TRUSTED if trusted_peer else REQUEST_DROP_RAW
    if has_connection:
        drop = drop | _raw_connection_tokens(raw)
    if keep_out:
        drop = drop | keep_out
    return [
        name + b": " + value + b"\r\n"
        for name, value in raw
        if name.lower() not in drop and b"_" not in name
    ]


def response_header_pairs(
    raw: Sequence[tuple[bytes, bytes]], has_connection: bool
) -> list[tuple[str, str]]:
    """An upstream's response headers to relay (decoded as aiohttp decodes them), without
    hop-by-hop headers, the names its Connection header lists, X-Request-ID and Server."""
    drop = RESPONSE_DROP_RAW
    if has_connection:
        drop = drop | _raw_connection_tokens(raw)
    return [
        (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        for name, value in raw
        if name.lower() not in drop
    ]


_NOTHING: frozenset[bytes] = frozenset()
_AUTHORIZATION = frozenset({b"authorization"})
# By the header the caller's credential came in (Principal.credential_header).
_CREDENTIAL_NAMES = {"X-API-Key": frozenset({b"x-api-key"}), "Authorization": _AUTHORIZATION}
_PROTO_LINES = {
    "http": b"X-Forwarded-Proto: http\r\n",
    "https": b"X-Forwarded-Proto: https\r\n",
}


def credentials_kept_out(
    credential_header: str | None, *, forward_credentials: bool, endpoint_authorizes: bool
) -> frozenset[bytes]:
    """The client headers that stay at the gateway (lowercase names): the caller's credential
    unless the route forwards it, and Authorization when the upstream URL has its own."""
    keep_out = _NOTHING
    if credential_header and not forward_credentials:
        keep_out = _CREDENTIAL_NAMES[credential_header]
    if endpoint_authorizes:
        keep_out = keep_out | _AUTHORIZATION
    return keep_out


def forwarded_lines(
    peer: str, forwarded_for: str | None, scheme: str, host: str | None
) -> list[bytes]:
    """X-Forwarded-For (`forwarded_for`, the client's chain, only when the peer is a trusted
    proxy: anyone else starts it afresh), X-Forwarded-Proto and X-Forwarded-Host."""
    lines = [
        f"X-Forwarded-For: {forwarded_for}, {peer}\r\n".encode()
        if forwarded_for
        else f"X-Forwarded-For: {peer}\r\n".encode(),
        _PROTO_LINES[scheme],
    ]
    if host:
        # As sent (llhttp refused CR/LF/NUL); its bytes need not be UTF-8.
        lines.append(b"X-Forwarded-Host: " + host.encode("utf-8", "surrogateescape") + b"\r\n")
    return lines


def identity_lines(request_id: str, module_id: str, who: Principal) -> list[bytes]:
    """The request id and who is calling, for the module service (the client's own versions
    of these headers were stripped).

    Invariant: no value holds CR, LF, NUL or another control character, or the line it is
    written into would end early and the rest become a header of the caller's choosing. Each
    source refuses them already (request ids: `request_id_for`; ids: UUIDs; scopes:
    `key_fields.parse_scope`, the JWT verifier; a JWT's site claim: the verifier), except a
    JWT's `sub`, which is the issuer's text: a user id that is not printable is left out. Any
    other such value is a gateway bug, answered 500 rather than left out, since a request
    without its site could mean more access upstream, not less."""
    lines = [f"X-Request-ID: {request_id}", f"X-Module-Id: {module_id}"]
    if who.site_id:
        lines.append(f"X-Site-Id: {who.site_id}")
    if who.user_id and who.user_id.isprintable():
        lines.append(f"X-User-Id: {who.user_id}")
    if who.api_key is not None:
        lines.append(f"X-Api-Key-Id: {who.api_key.record.id}")
    elif who.consumer is not None:
        lines.append(f"X-Consumer-Id: {who.consumer.record.id}")
    if who.grants.scopes:
        lines.append(f"X-Scopes: {' '.join(who.grants.scopes)}")
    if not "".join(lines).isprintable():  # one check for every value, before any CR LF
        raise InternalError("An identity header value holds a control character")
    return [(line + "\r\n").encode("utf-8", "surrogateescape") for line in lines]
