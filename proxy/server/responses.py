"""The one place the error shape `{"error", "code", "request_id"}` is produced."""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.errors import GatewayError


def error_response(err: GatewayError, request_id: str) -> web.Response:
    body = orjson.dumps({"error": err.message, "code": err.code, "request_id": request_id})
    response = web.Response(
        status=err.status, body=body, content_type="application/json", headers=err.headers()
    )
    response.headers["X-Request-ID"] = request_id
    if err.status == 413:
        # The unread body may be huge: closing is cheaper than draining it for keep-alive.
        response.force_close()
    return response
