"""The `Server` header of every response modgate writes: `modgate`, never versions.

aiohttp writes `Server: Python/3.11 aiohttp/3.x` on each response it prepares that has none
(`StreamResponse._prepare_headers`: `headers.setdefault(SERVER, SERVER_SOFTWARE)`, read from
aiohttp.web_response's module globals), which tells a scanner which known vulnerabilities to
try. Replacing that global once, when a server is built, costs nothing per request; a
response that sets its own `Server` (a proxied upstream's) keeps it. The client side
(`User-Agent`) reads its own copy and is not changed. tests/test_serve_embedded.py fails
if an aiohttp release stops reading the global.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web_response

SERVER_HEADER: Final = "modgate"


def hide_server_version() -> None:
    """Make aiohttp's default `Server` header `modgate` in this process (idempotent)."""
    setattr(web_response, "SERVER_SOFTWARE", SERVER_HEADER)  # noqa: B010 (not re-exported)
