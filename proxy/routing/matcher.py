"""Resolve a request path and method to one route: a segment trie with method-aware backtracking.

Strategy:
    Patterns compile once, at build time, into a trie. Each node has a dict of static children
    (keyed by the literal segment), at most one `:param` child, a `rest` slot for a trailing
    `*`, and an `ends` slot for patterns that end at the node; both slots are dicts
    method -> entry. Param names live on the entry (as positions), not on the node, so
    `GET /a/:id` and `POST /a/:name` share a node. A HEAD alias to the GET entry is added to
    every slot that has GET and no HEAD, so the hot path never special-cases HEAD.

    Precedence is lexicographic from the left: at each segment a static beats a `:param`, which
    beats a trailing `*`; where the path ends, a pattern ending there beats a `*` matching zero
    segments. A depth-first search visits children in exactly that order and stops at the
    first slot holding the request's method, so the first hit is the highest-precedence
    matching entry for that method. It backtracks only when a higher-precedence branch
    dead-ends (no matching node, or no entry for the method below it).

    Cost: a hit on the greedy branch (static, else param, at every segment) is one dict
    lookup per segment, and `match` tries that branch first without recursion. Otherwise the
    search visits each trie node at most once (an edge consumes one segment, so a node is only
    ever reached at its own depth): at most 2**depth nodes, bounded by the path's depth, never
    by the route count. A 404/405 walks once more to collect the Allow methods.

    Request paths are split on "/" before percent-decoding, so "%2F" stays inside a segment;
    segments without "%" skip decoding. Empty segments never match a static or a `:param`
    (statics are non-empty and params refuse ""), so only a trailing `*` can absorb them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Generic, NoReturn, TypeVar
from urllib.parse import unquote_to_bytes

from proxy.errors import BadRequest, MethodNotAllowed, RouteConflictError, RouteNotFound

T = TypeVar("T")

# The order an Allow header lists methods in; other tokens follow, alphabetically.
CANONICAL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
WILDCARD_KEY = "*"

_METHOD_RANK = {method: rank for rank, method in enumerate(CANONICAL_METHODS)}
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METHOD_TOKEN = re.compile(r"[A-Z][A-Z0-9_-]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_MALFORMED = "Malformed percent-encoding in path"


def normalize_template(pattern: str) -> str:
    """The canonical text of a pattern (no trailing slash but for "/"); raises on a bad one."""
    return "/" + "/".join(_parse(pattern))


def _parse(pattern: str) -> list[str]:
    """Validate a pattern and return its segments; refusals name the pattern as given."""

    def refuse(reason: str) -> NoReturn:
        raise RouteConflictError(f"invalid route path {pattern!r}: {reason}")

    if not pattern.startswith("/"):
        refuse("must start with '/'")
    segments = pattern[1:].split("/")
    if segments[-1] == "":
        segments.pop()  # one trailing slash is ignored; "/" leaves no segments
    names: set[str] = set()
    for index, segment in enumerate(segments):
        if segment == "":
            refuse("empty segment")
        if segment.startswith(":"):
            name = segment[1:]
            if _PARAM_NAME.fullmatch(name) is None:
                refuse(f"bad parameter name {name!r}")
            if name in names:
                refuse(f"duplicate parameter {name!r}")
            names.add(name)
        elif segment == "*":
            if index != len(segments) - 1:
                refuse("'*' is only allowed as the last segment")
        else:
            for char in "%:*":
                if char in segment:
                    refuse(f"{char!r} is not allowed in a static segment")
    return segments


class _Entry(Generic[T]):
    """One route as the trie stores it; `keys` names the captured values in path order."""

    __slots__ = ("keys", "payload", "template")

    def __init__(self, template: str, payload: T, keys: tuple[str, ...]) -> None:
        self.template = template
        self.payload = payload
        self.keys = keys


class _Node(Generic[T]):
    __slots__ = ("ends", "param", "rest", "statics")

    def __init__(self) -> None:
        self.statics: dict[str, _Node[T]] = {}
        self.param: _Node[T] | None = None
        self.ends: dict[str, _Entry[T]] = {}  # patterns ending here
        self.rest: dict[str, _Entry[T]] = {}  # patterns ending in "*" here


# One empty dict for every empty slot once a table is built (never mutated after build): most
# nodes end no route and have no children, and a dict costs 64 bytes even empty.
_EMPTY: dict[str, Any] = {}


def _share_empty(root: _Node[T]) -> None:
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.statics.values())
        if node.param is not None:
            stack.append(node.param)
        for slot in ("statics", "ends", "rest"):
            if not getattr(node, slot):
                setattr(node, slot, _EMPTY)


class Match(Generic[T]):
    """The winning route: its payload, its decoded params ("*" for the rest) and its template."""

    __slots__ = ("params", "payload", "template")

    def __init__(self, payload: T, params: dict[str, str], template: str) -> None:
        self.payload = payload
        self.params = params
        self.template = template

    def __repr__(self) -> str:
        return f"<Match {self.template} params={self.params!r}>"


class PathMatcher(Generic[T]):
    """An immutable route table; build it with `PathMatcher.build`."""

    __slots__ = ("_count", "_root")

    _root: _Node[T]
    _count: int

    def __init__(self, root: _Node[T], count: int) -> None:
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_count", count)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str, T]]) -> PathMatcher[T]:
        """Compile (pattern, method, payload) entries; RouteConflictError on bad or clashing."""
        root: _Node[T] = _Node()
        count = 0
        for pattern, method, payload in entries:
            segments = _parse(pattern)
            template = "/" + "/".join(segments)
            if _METHOD_TOKEN.fullmatch(method) is None:
                raise RouteConflictError(
                    f"invalid route method {method!r} for {template}: must be an uppercase token"
                )
            node, keys = root, []
            slot = node.ends
            for segment in segments:
                if segment == "*":
                    keys.append(WILDCARD_KEY)
                    slot = node.rest
                    break
                if segment.startswith(":"):
                    keys.append(segment[1:])
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    child = node.statics.get(segment)
                    if child is None:
                        child = node.statics[segment] = _Node()
                    node = child
                slot = node.ends
            earlier = slot.get(method)
            if earlier is not None:
                raise RouteConflictError(
                    f"{method} {template} conflicts with {method} {earlier.template}: "
                    "both match the same paths with the same precedence"
                )
            slot[method] = _Entry(template, payload, tuple(keys))
            count += 1
        _alias_head(root)
        _share_empty(root)
        return cls(root, count)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"<PathMatcher routes={self._count}>"

    def match(self, raw_path: str, method: str) -> Match[T]:
        """The highest-precedence entry for this path and method, or RouteNotFound / 405 / 400."""
        segments = _split(raw_path)
        if segments is not None:
            # Fast path: the greedy descent (static, else param) is the first branch the search
            # would try, so a hit at its end is the search's answer; anything else falls back.
            node = self._root
            values: list[str] = []
            for segment in segments:
                child = node.statics.get(segment)
                if child is None:
                    child = node.param
                    if child is None or not segment:
                        break
                    values.append(segment)
                node = child
            else:
                entry = node.ends.get(method)
                if entry is not None:
                    return Match(entry.payload, _params(entry.keys, values), entry.template)
            values = []
            found = _search(self._root, segments, 0, len(segments), method, values)
            if found is not None:
                return Match(found.payload, _params(found.keys, values), found.template)
        allowed = self._allowed(segments)
        if allowed:
            raise MethodNotAllowed(allowed)
        raise RouteNotFound()

    def allowed_methods(self, raw_path: str) -> tuple[str, ...]:
        """Methods some entry matching this path accepts, in Allow order; () when none match."""
        return self._allowed(_split(raw_path))

    def _allowed(self, segments: list[str] | None) -> tuple[str, ...]:
        if segments is None:
            return ()
        methods: set[str] = set()
        _collect(self._root, segments, 0, len(segments), methods)
        return tuple(sorted(methods, key=lambda m: (_METHOD_RANK.get(m, len(_METHOD_RANK)), m)))


def _params(keys: tuple[str, ...], values: list[str]) -> dict[str, str]:
    """A fresh params dict; one key per captured value is an invariant of the search."""
    if not keys:
        return {}  # most routes: no zip, no dict() call
    if len(keys) == 1:
        return {keys[0]: values[0]}
    return dict(zip(keys, values))  # noqa: B905 (strict= costs more than the whole lookup)


def _alias_head(root: _Node[Any]) -> None:
    """Let HEAD reach the GET entry of every slot that has no HEAD entry of its own."""
    stack = [root]
    while stack:
        node = stack.pop()
        for slot in (node.ends, node.rest):
            if "GET" in slot and "HEAD" not in slot:
                slot["HEAD"] = slot["GET"]
        stack.extend(node.statics.values())
        if node.param is not None:
            stack.append(node.param)


def _split(raw_path: str) -> list[str] | None:
    """Decoded request segments, without one trailing slash; None when not an absolute path."""
    if raw_path == "":
        return []
    if raw_path[0] != "/":
        return None  # e.g. "*" (OPTIONS *) or an absolute URI: no pattern can match it
    segments = raw_path[1:].split("/")
    if segments[-1] == "":
        segments.pop()
    if "%" in raw_path:
        segments = [_decode(s) if "%" in s else s for s in segments]
    return segments


def _decode(segment: str) -> str:
    # unquote_to_bytes alone passes "%zz" through and the UTF-8 check is ours: both are 400s.
    if _BAD_PERCENT.search(segment) is None:
        try:
            return unquote_to_bytes(segment).decode("utf-8")
        except UnicodeError:
            pass
    raise BadRequest(_MALFORMED)


def _search(
    node: _Node[T], segments: list[str], index: int, end: int, method: str, values: list[str]
) -> _Entry[T] | None:
    """Depth-first in precedence order; `values` holds the captures of the current branch."""
    if index == end:
        entry = node.ends.get(method)
        if entry is None:
            entry = node.rest.get(method)
            if entry is not None:
                values.append("")
        return entry
    segment = segments[index]
    child = node.statics.get(segment)
    if child is not None:
        entry = _search(child, segments, index + 1, end, method, values)
        if entry is not None:
            return entry
    child = node.param
    if child is not None and segment:
        values.append(segment)
        entry = _search(child, segments, index + 1, end, method, values)
        if entry is not None:
            return entry
        values.pop()
    entry = node.rest.get(method)
    if entry is not None:
        values.append("/".join(segments[index:]))
    return entry


def _collect(node: _Node[Any], segments: list[str], index: int, end: int, out: set[str]) -> None:
    """Add the methods of every slot whose patterns match the path (the 404/405 path only)."""
    out.update(node.rest)
    if index == end:
        out.update(node.ends)
        return
    segment = segments[index]
    child = node.statics.get(segment)
    if child is not None:
        _collect(child, segments, index + 1, end, out)
    if node.param is not None and segment:
        _collect(node.param, segments, index + 1, end, out)
