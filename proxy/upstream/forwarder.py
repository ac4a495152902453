"""The Forwarder: a request the pipeline has let through, sent on to a module's upstream.

The pipeline says who is calling (the principal, its module, the request context's id) and
where to (the route's target and the path to ask it for); the Forwarder writes the bytes.
It owns everything between: the upstream pool, the body limit, the whole header policy
(`headers.py`: what of the client's crosses, X-Forwarded-*, the caller's identity, which
credentials stay at the gateway) and whether the gateway owns the response's CORS headers.
The exchange itself is `forward.exchange`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.upstream.forward import exchange
from proxy.upstream.headers import (
    credentials_kept_out,
    forwarded_lines,
    identity_lines,
    request_header_lines,
)

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.auth.client_address import ClientAddressResolver
    from proxy.auth.principal import Principal
    from proxy.request_context import RequestContext
    from proxy.routing.table import UpstreamTarget
    from proxy.upstream.pool import UpstreamPool


class Forwarder:
    """Sends requests through `pool`, bodies up to `max_body_bytes` (0: no limit). `addresses`
    says which peers are trusted proxies (their X-Forwarded-For chain, Forwarded and X-Real-IP
    cross); `gateway_cors` (CORS on) makes the gateway's Access-Control-* headers the only ones
    a response carries."""

    __slots__ = ("addresses", "gateway_cors", "max_body_bytes", "pool")

    def __init__(
        self,
        pool: UpstreamPool,
        *,
        addresses: ClientAddressResolver,
        max_body_bytes: int,
        gateway_cors: bool = False,
    ) -> None:
        self.pool = pool
        self.addresses = addresses
        self.max_body_bytes = max_body_bytes
        self.gateway_cors = gateway_cors

    async def forward(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        target: UpstreamTarget,
        path: str,
        *,
        caller: Principal,
        module_id: str,
        forward_credentials: bool,
    ) -> web.StreamResponse:
        """`request` sent to `path` (with its query) on `target`'s origin, for `caller` of
        module `module_id`; the upstream's response relayed with `ctx.response_headers`.
        `forward_credentials`: the route lets the caller's own credential header through."""
        endpoint = self.pool.endpoint(target.origin)
        keep_out = credentials_kept_out(
            caller.credential_header,
            forward_credentials=forward_credentials,
            endpoint_authorizes=endpoint.authorization is not None,
        )
        headers = request.headers
        peer = request.remote or ""
        trusted = self.addresses.trusts(peer)
        lines = request_header_lines(
            request.raw_headers, "Connection" in headers, keep_out, trusted_peer=trusted
        )
        lines += forwarded_lines(
            peer,
            headers.get("X-Forwarded-For") if trusted else None,
            request.scheme,
            request.host,
        )
        lines += identity_lines(ctx.request_id, module_id, caller)
        return await exchange(
            request,
            self.pool,
            endpoint,
            path,
            lines,
            max_body_bytes=self.max_body_bytes,
            buffered_body=ctx.body,
            response_headers=ctx.response_headers,
            gateway_cors=self.gateway_cors,
        )
