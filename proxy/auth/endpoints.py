"""An API consumer's `allowed_endpoints`, compiled once per distinct list and checked against
the route a request matched.

A pattern is `*` (everything), `METHOD /path` or `* /path` (any method); `/path` is a route
template, and parameters match whatever their names (`GET /products/:id` allows the route
`GET /products/:productId`), since a consumer's author writes the seed's paths, not the
module's parameter names. A pattern names a route, not a prefix: `GET /products` does not
allow `GET /products/:id`.

Checked against the matched route's method and template, never the request's path: the
template is what the route table resolved, so no spelling of a path (dot segments, encoded
characters, a trailing slash) can reach a route its pattern does not name. A HEAD request that
reached a GET route is checked as GET, the route's method.
"""

from __future__ import annotations

import functools

_ANY = "*"


@functools.lru_cache(maxsize=4096)
def template_shape(template: str) -> str:
    """A route template with its parameter names left out ('/a/:id/*rest' -> '/a/:/*') and no
    trailing slash: what two spellings of one route have in common. Cached: route templates
    are few, and this runs once per consumer request."""
    segments = template.strip("/").split("/")
    shape = "/".join(s[0] if s[:1] in (":", "*") else s for s in segments)
    return "/" + shape


class EndpointRules:
    """Compiled `allowed_endpoints` (each already in key_fields.normalize_endpoint's form)."""

    __slots__ = ("_any_method", "_everything", "_pairs", "patterns")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._everything = _ANY in patterns
        pairs: set[tuple[str, str]] = set()
        any_method: set[str] = set()
        for pattern in patterns:
            method, _, path = pattern.partition(" ")
            if not path:
                continue  # '*' (handled above); nothing else lacks a path once normalized
            if method == _ANY:
                any_method.add(template_shape(path))
            else:
                pairs.add((method, template_shape(path)))
        self._pairs = frozenset(pairs)
        self._any_method = frozenset(any_method)

    def allows(self, method: str, template: str) -> bool:
        """Whether the route `method template` is one of these endpoints."""
        if self._everything:
            return True
        shape = template_shape(template)
        return shape in self._any_method or (method, shape) in self._pairs

    def __repr__(self) -> str:
        return f"EndpointRules({' , '.join(self.patterns)!r})"
