"""CORS for browser callers: the gateway owns every Access-Control-* header while it is on.

- A preflight (OPTIONS with Origin and Access-Control-Request-Method) never reaches a module:
  for an allowed origin it gets 204 with the methods the path has in the route table; any
  other origin gets 403 and no CORS headers. A preflight from an allowed origin to a path no
  route matches (or an unknown module) gets its 404 with the CORS headers, so the browser
  reports a preflight that failed with 404, not a missing Access-Control-Allow-Origin.
- Every preflight allows the same request headers: `Content-Type`, `X-Request-ID` and both
  credential headers, `Authorization` and `X-API-Key`. The credential headers are allowed on
  routes whose credentials are optional (requires_auth false) too: credentials that are sent
  there are still checked and still decide the caller's identity, site and limits, so a page
  must be able to send them. Allowing a header only lets the page send it; it grants nothing.
- Other responses to an allowed origin carry Access-Control-Allow-Origin echoing that origin
  (never `*`, even when `cors_origins` lists `*`, so caches keyed on Vary: Origin stay
  correct and credentials can be allowed), `Access-Control-Allow-Credentials: true` when
  `cors_allow_credentials` is set, and expose the gateway's headers.
- Invariant: whatever the origin (allowed, refused, or none), a response carries only the
  gateway's Access-Control-* headers: an upstream's or a handler's own are removed
  (`apply_gateway_cors`), since `Access-Control-Allow-Origin: *` from a module would let
  any page read what the gateway refused to share. Every response says `Vary: Origin`
  (merged with the module's own Vary), because every response depends on the Origin.
- `cors_origins` empty (the default) turns all of this off: modules' headers pass untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from multidict import CIMultiDict

EXPOSED = "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"
ALLOWED_HEADERS = "Content-Type, X-Request-ID, Authorization, X-API-Key"
VARY = "Origin"
_PREFIX = "access-control-"


class CorsPolicy:
    __slots__ = ("_any", "_credentials", "_origins", "_preflight", "enabled", "max_age")

    def __init__(
        self, origins: Iterable[str], *, max_age: int, allow_credentials: bool = False
    ) -> None:
        self._origins = frozenset(origins)
        self._any = "*" in self._origins
        self.enabled = bool(self._origins)
        self.max_age = str(max_age)
        self._credentials = (
            {"Access-Control-Allow-Credentials": "true"} if allow_credentials else {}
        )
        self._preflight = {
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": self.max_age,
        }

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin in self._origins)

    def response_headers(self, origin: str, *, preflight: bool = False) -> dict[str, str]:
        """The headers every response to an allowed `origin` carries (a preflight's too)."""
        headers = {"Access-Control-Allow-Origin": origin, **self._credentials}
        if not preflight:
            headers["Access-Control-Expose-Headers"] = EXPOSED
        return headers

    def preflight_headers(self, methods: Iterable[str]) -> dict[str, str]:
        """What a preflight's 204 adds to `response_headers`: what the path accepts."""
        return {"Access-Control-Allow-Methods": ", ".join(methods), **self._preflight}


def is_preflight(method: str, origin: str | None, requested_method: str | None) -> bool:
    return method == "OPTIONS" and origin is not None and requested_method is not None


def is_foreign_cors(name: str) -> bool:
    """Whether a header a module sent is one the gateway owns while CORS is on."""
    return name[:15].lower() == _PREFIX


def strip_foreign_cors(headers: CIMultiDict[str]) -> None:
    """Remove, in place, every Access-Control-* header of a response from behind the gateway."""
    for name in [name for name in headers if is_foreign_cors(name)]:
        headers.popall(name, None)  # every value of that name, in any case


def vary_with_origin(values: Sequence[str]) -> str:
    """One Vary value from a module's Vary lines: its field names, then Origin unless it
    already names it; `*` (varies on everything) stays `*`."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    lowered = {name.lower() for name in names}
    if "*" in lowered:
        return "*"
    if "origin" not in lowered:
        names.append(VARY)
    return ", ".join(names)


def apply_gateway_cors(headers: CIMultiDict[str], extra: Mapping[str, str]) -> None:
    """Make a module's response headers (an upstream's or a handler's) the gateway's, with CORS
    on: its Access-Control-* removed, the gateway's `extra` applied, and its Vary kept,
    merged with the gateway's `Vary: Origin`."""
    strip_foreign_cors(headers)
    vary = headers.popall("Vary", ())
    headers.update(extra)
    headers["Vary"] = vary_with_origin(vary) if vary else VARY
