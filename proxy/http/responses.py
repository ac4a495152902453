"""The one place the error shape `{"error", "code", "request_id"}` is produced."""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.errors import GatewayError


def error_response(
    err: GatewayError, request_id: str, extra: dict[str, str] | None = None
) -> web.Response:
    """The error as JSON, with its own headers (Allow, WWW-Authenticate) and `extra` (the
    request's X-Request-ID and CORS headers); `details` only when the error has them."""
    shape: dict[str, object] = {"error": err.message, "code": err.code, "request_id": request_id}
    if err.details is not None:
        shape["details"] = err.details
    body = orjson.dumps(shape)
    headers = {**(extra or {}), **err.headers(), "Content-Type": "application/json"}
    headers["X-Request-ID"] = request_id
    response = web.Response(status=err.status, body=body, headers=headers)
    if err.status == 413:
        # The unread body may be huge: closing is cheaper than draining it for keep-alive.
        response.force_close()
    return response
