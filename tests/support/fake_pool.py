"""A stand-in for the handler pool: records each execute call and answers as the seed's REST API
would, so gateway tests can assert on the exact call an entity route makes (the pool's own side
is tested in tests/executor/)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class RecordingPool:
    """`POST /v1/execute` that records each call's JSON; a create of `{"title": ""}` fails
    validation (400), anything else succeeds (201 for create, else 200)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def start(self, aiohttp_server: Any) -> str:
        """Serve it under `aiohttp_server`; returns its URL (the gateway's executor_url)."""
        app = web.Application()
        app.router.add_post("/v1/execute", self.execute)
        server = await aiohttp_server(app)
        return f"http://127.0.0.1:{server.port}"

    async def execute(self, request: web.Request) -> web.Response:
        call = orjson.loads(await request.read())
        self.calls.append(call)
        if call["operation"] == "create" and call["body"] == {"title": ""}:
            error = {"error": "Validation failed", "code": "validation_failed",
                     "details": ["title must not be empty"]}  # fmt: skip
            return web.json_response(error, status=400)
        status = 201 if call["operation"] == "create" else 200
        return web.json_response({"data": {"operation": call["operation"]}}, status=status)
