"""Request paths as the gateway matches and forwards them: one normal form, decided once.

Strategy (after Envoy's `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`):
the path is normalised *before* matching, and the normalised text is what gets forwarded, so an
upstream that normalises again (nginx, most frameworks) resolves exactly the resource whose
route the gateway authorised. Anything that could be read two ways is refused instead.

- Dot segments: a segment whose percent-decoded text is "." or ".." ("%2e", ".%2E", ...) is a
  dot segment and is removed per RFC 3986 section 5.2.4; a path that climbs above its root
  (the module root) is refused, never clamped.
- Empty segments are merged ("/a//b" is "/a/b"): upstreams that merge slashes would otherwise
  see a different path than the one matched. One trailing slash is kept as sent.
- Encoded separators ("%2F", "%5C", any case) are left alone, not decoded: the pipeline asks
  `has_encoded_slash` and refuses them unless the matched route keeps them
  (`encoded_slashes: keep`), and then they travel still encoded; even then a segment that
  would hold a dot segment once an upstream decodes its separators ("..%2Fadmin") is refused
  (`hides_dot_segment`), since an upstream that decodes and normalises would climb. A raw
  backslash is refused outright (some servers take it for "/").
- A dot segment with `;` path parameters ("..;", "%2e%2e;x") is refused: servlet containers
  strip the parameters and then climb.
- Everything else is forwarded byte for byte as the client sent it.

Invariant: the result has no dot segment in any encoding, no empty segment but a trailing
one, and starts with "/". Common paths (no "%", no "/.", no "//", no "\\") come back as the
same object after four substring tests (no allocation: this runs on every request).
"""

from __future__ import annotations

from urllib.parse import unquote

from proxy.errors import BadRequest

_DOTS = {".": 1, "..": 2}


def normalize_path(raw: str) -> str:
    """The normal form of a raw (still percent-encoded) path; BadRequest for what is refused."""
    if "\\" in raw:
        raise BadRequest("Backslash in path")
    if "%" not in raw and "/." not in raw and "//" not in raw:
        return raw or "/"
    if not raw.startswith("/"):
        raise BadRequest("Path must start with '/'")
    out: list[str] = []
    segments = raw[1:].split("/")
    last = len(segments) - 1
    trailing = False
    for index, segment in enumerate(segments):
        kind = _dot_kind(segment)
        if kind == 1:
            trailing = index == last  # "/a/." is "/a/"
        elif kind == 2:
            if not out:
                raise BadRequest("Path climbs above its root")
            out.pop()
            trailing = index == last
        elif segment:
            out.append(segment)
            trailing = False
        elif index == last:
            trailing = True
    path = "/" + "/".join(out)
    if trailing and out:
        path += "/"
    return path


def origin_form(target: str, host: str | None) -> str:
    """The request target as a path and query. An absolute-form target (`http://host/p?q`,
    what clients send to a proxy; RFC 9112 section 3.2.2 says a server must accept it) becomes
    `/p?q` once its authority is found equal to the Host header (case-insensitive): a target
    naming another host than Host is ambiguous, and refused rather than guessed."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return target
    end = len(rest)
    for delimiter in "/?":
        at = rest.find(delimiter)
        if at != -1:
            end = min(end, at)
    authority, remainder = rest[:end], rest[end:]
    if "@" in authority or authority.lower() != (host or "").lower():
        raise BadRequest("The request target's authority does not match Host")
    return remainder if remainder.startswith("/") else "/" + remainder


def _dot_kind(segment: str) -> int:
    """1 for a "." segment, 2 for "..", 0 otherwise, whatever the encoding of the dots.

    A dot segment with path parameters ("..;x=1", "%2e%2e;") is refused: Tomcat, Jetty and
    Spring drop the parameters and climb, nginx and the gateway would not."""
    if ";" in segment:
        if _dot_kind(segment.partition(";")[0]):
            raise BadRequest("A dot segment cannot carry path parameters (';')")
        return 0
    if len(segment) > 6 or not segment:
        return 0
    if "%" in segment:
        segment = segment.replace("%2e", ".").replace("%2E", ".")
    return _DOTS.get(segment, 0)


def hides_dot_segment(path: str) -> bool:
    """Whether a segment holding "%2F" / "%5C" would yield a "." or ".." segment once an
    upstream decodes it and splits it on "/" or "\\" ("..%2Fadmin", "a%5C..")."""
    for segment in path.split("/"):
        if "%" in segment and has_encoded_slash(segment):
            decoded = unquote(segment).replace("\\", "/")
            if any(piece in _DOTS for piece in decoded.split("/")):
                return True
    return False


def has_encoded_slash(path: str) -> bool:
    """Whether `path` holds "%2F" or "%5C" (any case)."""
    if "%" not in path:
        return False
    lowered = path.lower()
    return "%2f" in lowered or "%5c" in lowered
