"""Resolve a request path and method to one route: a segment trie with method-aware backtracking.

Strategy:
    Patterns compile once, at build time, into a trie. Each node has its static children
    (keyed by the literal segment), at most one `:param` child, and an `ends` map,
    method -> entry, for the patterns that end at the node. A trailing `*` is a child too,
    under a key that no request segment can equal (`_REST`): the patterns ending in `*` at a
    node end at that child. Param names live on the entry (as
    positions), not on the node, so `GET /a/:id` and `POST /a/:name` share a node. A HEAD alias
    to the GET entry is added to every map that has GET and no HEAD, so the hot path never
    special-cases HEAD.

    Precedence is lexicographic from the left: at each segment a static beats a `:param`, which
    beats a trailing `*`; where the path ends, a pattern ending there beats a `*` matching zero
    segments. A depth-first search visits children in exactly that order and stops at the
    first map holding the request's method, so the first hit is the highest-precedence
    matching entry for that method. It backtracks only when a higher-precedence branch
    dead-ends (no matching node, or no entry for the method below it).

    Cost: a hit on the greedy branch (static, else param, at every segment) is one comparison
    or dict lookup per segment, and `match` tries that branch first without recursion.
    Otherwise the search visits each trie node at most once (an edge consumes one segment, so a
    node is only ever reached at its own depth): at most 2**depth nodes, bounded by the path's
    depth, never by the route count. A 404/405 walks once more to collect the Allow methods.

    Memory: a worker may hold 100k routes, so a built node is small (see `_Node`): a single
    static child is kept inline rather than in a one-entry dict (about 180 bytes), the method
    maps are shared by every node with the same methods, and the entries are one flat tuple
    per node. Segments, param-name tuples and templates are one object each per table.

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
    """The canonical text of a pattern (no trailing slash but for "/"); raises on a bad one.

    A pattern that is canonical already comes back as the same object, so the tables that keep
    both the pattern and the template keep one string."""
    return _canonical(pattern, _parse(pattern))


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


# Keys that no request segment can equal: the `seg` of a node without exactly one static child
# (so the hot path compares without testing which case it is in), and the static key of the
# child where patterns ending in a trailing `*` end. Each holds a "/" and a lone surrogate: a
# segment left as sent has no "/" (paths are split on it), and a percent-decoded one has no
# lone surrogate (it is strict UTF-8), so "%2F" or "%2A%2F" cannot reach them.
_NO_SEGMENT = "\ud800/"
_REST = "\ud800/*"
# The one empty map of every built table (never mutated): most nodes end no route and have
# fewer than two static children, and a dict costs 64 bytes even empty.
_EMPTY: dict[str, Any] = {}
_NO_CHILD: Any = None


class _Node(Generic[T]):
    """A trie node: filled by `PathMatcher.build`, then compacted once by `_freeze`.

    Invariants of a built node: a single static child is inline (`seg` is its segment and
    `only` the child, `statics` is empty); two or more, or none, are in `statics` (`seg` is
    `_NO_SEGMENT`, which no request segment equals, and `only` is never read). `ends` maps a
    method to the offset of its entry in `entries`, a flat tuple of (payload, param names,
    template) triples; equal maps are one shared dict per table. Six slots make 80 bytes;
    pymalloc rounds sizes up to 16, so a seventh would cost 16 more per node.
    """

    __slots__ = ("ends", "entries", "only", "param", "seg", "statics")

    def __init__(self) -> None:
        self.seg = _NO_SEGMENT
        self.only: _Node[T] = _NO_CHILD  # read only when `seg` matched, so only when set
        self.statics: dict[str, _Node[T]] = _EMPTY
        self.param: _Node[T] | None = None
        self.ends: dict[str, int] = _EMPTY
        self.entries: tuple[Any, ...] = ()


def _static_child(node: _Node[T], segment: str) -> _Node[T]:
    """The static child for this segment, created if missing (build time only)."""
    statics = node.statics
    child = statics.get(segment)
    if child is None:
        if statics is _EMPTY:
            statics = node.statics = {}
        child = statics[segment] = _Node()
    return child


def _freeze(root: _Node[Any]) -> None:
    """Inline single static children, alias HEAD to GET, and share equal method maps."""
    maps: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.statics.values())
        if node.param is not None:
            stack.append(node.param)
        if len(node.statics) == 1:
            node.seg, node.only = next(iter(node.statics.items()))
            node.statics = _EMPTY
        ends = node.ends
        if ends:
            if "GET" in ends and "HEAD" not in ends:
                ends["HEAD"] = ends["GET"]
            node.ends = maps.setdefault(tuple(sorted(ends.items())), ends)


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
    """A route table, never changed once built; build it with `PathMatcher.build`."""

    __slots__ = ("_count", "_root")

    def __init__(self, root: _Node[T], count: int) -> None:
        self._root = root
        self._count = count

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str, T]]) -> PathMatcher[T]:
        """Compile (pattern, method, payload) entries; RouteConflictError on bad or clashing."""
        root: _Node[T] = _Node()
        count = 0
        # One object per distinct segment, param name and name tuple, however many routes
        # repeat them ("items", ("id",)): a table holds each once.
        strings: dict[str, str] = {}
        names: dict[tuple[str, ...], tuple[str, ...]] = {}
        for pattern, method, payload in entries:
            segments = _parse(pattern)
            template = _canonical(pattern, segments)
            if _METHOD_TOKEN.fullmatch(method) is None:
                raise RouteConflictError(
                    f"invalid route method {method!r} for {template}: must be an uppercase token"
                )
            node, keys = root, []
            for segment in segments:
                if segment == "*":
                    keys.append(WILDCARD_KEY)
                    node = _static_child(node, _REST)
                elif segment.startswith(":"):
                    name = segment[1:]
                    keys.append(strings.setdefault(name, name))
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    node = _static_child(node, strings.setdefault(segment, segment))
            earlier = node.ends.get(method)
            if earlier is not None:
                raise RouteConflictError(
                    f"{method} {template} conflicts with {method} {node.entries[earlier + 2]}: "
                    "both match the same paths with the same precedence"
                )
            if node.ends is _EMPTY:
                node.ends = {}
            node.ends[method] = len(node.entries)
            shape = tuple(keys)
            node.entries += (payload, names.setdefault(shape, shape), template)
            count += 1
        _freeze(root)
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
                if segment == node.seg:
                    node = node.only
                    continue
                child = node.statics.get(segment)
                if child is None:
                    child = node.param
                    if child is None or not segment:
                        break
                    values.append(segment)
                node = child
            else:
                at = node.ends.get(method)
                if at is not None:
                    return _matched(node.entries, at, values)
            values = []
            found = _search(self._root, segments, 0, len(segments), method, values)
            if found is not None:
                return _matched(found[0], found[1], values)
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


def _canonical(pattern: str, segments: list[str]) -> str:
    """The template of parsed segments: the pattern itself when already canonical (shared)."""
    template = "/" + "/".join(segments)
    return pattern if template == pattern else template


def _matched(entries: tuple[Any, ...], at: int, values: list[str]) -> Match[Any]:
    """The Match for the entry at `at`, with a fresh params dict (one key per captured value
    is an invariant of the search)."""
    keys = entries[at + 1]
    params: dict[str, str]
    if not keys:
        params = {}  # most routes; dict(zip(...)) costs about 300 ns more
    elif len(keys) == 1:
        params = {keys[0]: values[0]}
    else:
        params = dict(zip(keys, values, strict=True))
    return Match(entries[at], params, entries[at + 2])


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


# Where a search found its entry: the node's `entries` and the entry's offset in them.
_Found = tuple[tuple[Any, ...], int]


def _search(
    node: _Node[T], segments: list[str], index: int, end: int, method: str, values: list[str]
) -> _Found | None:
    """Depth-first in precedence order; `values` holds the captures of the current branch."""
    if index == end:
        at = node.ends.get(method)
        if at is not None:
            return node.entries, at
    else:
        segment = segments[index]
        child = node.only if segment == node.seg else node.statics.get(segment)
        if child is not None:
            found = _search(child, segments, index + 1, end, method, values)
            if found is not None:
                return found
        child = node.param
        if child is not None and segment:
            values.append(segment)
            found = _search(child, segments, index + 1, end, method, values)
            if found is not None:
                return found
            values.pop()
    # The trailing wildcard takes the rest of the path ("" when none is left).
    rest = node.only if node.seg == _REST else node.statics.get(_REST)
    if rest is None:
        return None
    at = rest.ends.get(method)
    if at is None:
        return None
    values.append("/".join(segments[index:]))
    return rest.entries, at


def _collect(node: _Node[Any], segments: list[str], index: int, end: int, out: set[str]) -> None:
    """Add the methods of every map whose patterns match the path (the 404/405 path only)."""
    rest = node.only if node.seg == _REST else node.statics.get(_REST)
    if rest is not None:
        out.update(rest.ends)
    if index == end:
        out.update(node.ends)
        return
    segment = segments[index]
    child = node.only if segment == node.seg else node.statics.get(segment)
    if child is not None:
        _collect(child, segments, index + 1, end, out)
    if node.param is not None and segment:
        _collect(node.param, segments, index + 1, end, out)
