"""A module service for tests: echoes what it receives and misbehaves on request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class UpstreamLog:
    """What the upstream saw, for assertions."""

    requests: list[dict[str, object]] = field(default_factory=list)
    body_errors: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    body_started: asyncio.Event = field(default_factory=asyncio.Event)  # a first body chunk came
    finished: asyncio.Event = field(default_factory=asyncio.Event)


def build_upstream(log: UpstreamLog) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        size = 0
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                log.body_started.set()
        except BaseException as exc:  # a cut connection cancels this handler
            log.body_errors.append(type(exc).__name__)
            raise
        finally:
            log.finished.set()
        seen = {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": size,
        }
        log.requests.append(seen)
        response = web.json_response(seen)
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        response.headers["Connection"] = "keep-alive, X-Upstream-Private"
        response.headers["X-Upstream-Private"] = "secret"
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["X-Upstream"] = "yes"
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.json_response({"slow": True})

    async def stream(request: web.Request) -> web.StreamResponse:
        """Sends one chunk, waits for `log.release`, then the rest (proves no buffering)."""
        chunks = int(request.query.get("chunks", "4"))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        await response.write(b"a" * 65536)
        await asyncio.wait_for(log.release.wait(), 10)
        for _ in range(chunks - 1):
            await response.write(b"b" * 65536)
        await response.write_eof()
        return response

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query["bytes"])
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        block = b"x" * (1 << 20)
        sent = 0
        while sent < size:
            part = block[: min(len(block), size - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response

    async def broken(request: web.Request) -> web.StreamResponse:
        """Promises 1 MiB, sends 64 KiB, then drops the connection."""
        response = web.StreamResponse()
        response.content_length = 1 << 20
        await response.prepare(request)
        await response.write(b"z" * 65536)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def head_or_get(request: web.Request) -> web.Response:
        return web.Response(body=b"0123456789", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/slow", slow)
    app.router.add_get("/stream", stream)
    app.router.add_get("/big", big)
    app.router.add_get("/broken", broken)
    app.router.add_get("/ten", head_or_get)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
