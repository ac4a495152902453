"""CORS for browser callers, answered by the gateway from the route table.

- A preflight (OPTIONS with Origin and Access-Control-Request-Method) never reaches a module:
  for an allowed origin it gets 204 with the methods the path has in the route table and the
  headers its routes need; any other origin gets 403 and no CORS headers.
- Other responses to an allowed origin carry Access-Control-Allow-Origin echoing that origin
  (never `*`, so caches keyed on Vary: Origin stay correct) and expose the gateway's headers.
- `cors_origins` empty (the default) turns all of this off.
"""

from __future__ import annotations

from collections.abc import Iterable

EXPOSED = "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"
_BASE_HEADERS = ("Content-Type", "X-Request-ID")
_AUTH_HEADERS = ("Authorization", "X-API-Key")


class CorsPolicy:
    __slots__ = ("_any", "_origins", "enabled", "max_age")

    def __init__(self, origins: Iterable[str], *, max_age: int) -> None:
        self._origins = frozenset(origins)
        self._any = "*" in self._origins
        self.enabled = bool(self._origins)
        self.max_age = str(max_age)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin in self._origins)

    def response_headers(self, origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": EXPOSED,
            "Vary": "Origin",
        }

    def preflight_headers(
        self, origin: str, methods: Iterable[str], needs_auth: bool
    ) -> dict[str, str]:
        headers = _BASE_HEADERS + _AUTH_HEADERS if needs_auth else _BASE_HEADERS
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(methods),
            "Access-Control-Allow-Headers": ", ".join(headers),
            "Access-Control-Max-Age": self.max_age,
            "Vary": "Origin",
        }


def is_preflight(method: str, origin: str | None, requested_method: str | None) -> bool:
    return method == "OPTIONS" and origin is not None and requested_method is not None
