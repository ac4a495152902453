"""The floor: a bare aiohttp forwarder (no auth, limits, metrics or logs), for comparison.

python bench/bare_forwarder.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.Response:
    url = request.app["base"] + request.raw_path
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
    async with request.app[UPSTREAM].request(request.method, url, headers=headers) as upstream:
        body = await upstream.read()
        return web.Response(status=upstream.status, body=body, content_type=upstream.content_type)


async def session(app: web.Application):  # type: ignore[no-untyped-def]
    app[UPSTREAM] = aiohttp.ClientSession(auto_decompress=False)
    yield
    await app[UPSTREAM].close()


def main() -> None:
    port, base = int(sys.argv[1]), sys.argv[2].rstrip("/")
    app = web.Application()
    app["base"] = base
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
