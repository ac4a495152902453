"""Property-based tests of the edge (issue 12 deliverable 9, third point).

Strategy: hypothesis generates whole request heads (paths with every encoding of ".", "/",
"\\" and "%", header sets, `Connection` tokens, duplicate and odd-cased framing headers,
Content-Length and chunked bodies) that are written raw to one gateway in front of one
recording RawUpstream that answers every request. Each example checks the invariants:

- the upstream gets exactly one request (an answer from it) or none (a refusal: 4xx/5xx in the
  error shape, with X-Request-ID); never two, never a byte more than one message;
- a forwarded request is framed by the gateway (one Content-Length or chunked, never both),
  and its body, as the upstream parses it, is the body the client sent;
- no client identity header, `Forwarded` or `X-Real-IP` reaches the upstream; X-Forwarded-For
  is the peer's; the gateway's own headers are there whatever `Connection` named;
- the forwarded path is the normalised path (reference: `normalised` below) behind the route
  it matched: no dot segment in any encoding, no `//`, no encoded slash unless the route keeps
  them, and never the admin route's upstream path (no credentials are ever sent);
- where the outcome is certain (a clean request, a `Connection` naming a framing header, a bad
  transfer coding, a path climbing out of the module), the status is the expected one.

Runs are derandomized (the seed is fixed by each test's name), so a failure reproduces on the
next run; hypothesis prints the minimal failing example (and a `@reproduce_failure` blob).
MODGATE_FUZZ_EXAMPLES scales the number of examples (default below, about a minute in all).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.edge import (
    FUZZ_STATS,
    IDENTITY_HEADERS,
    RawResponse,
    RunningGateway,
    StartGateway,
    StartUpstream,
    assert_error,
    chunked,
    exchange,
    requests_begun,
)
from tests.support.gateway import MODULE_ID
from tests.support.raw_upstream import RawUpstream, SeenRequest, response

EXAMPLES = int(os.environ.get("MODGATE_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PREFIX = "/api/modules/crm"
HOST = "gateway.test"
OK = b"fuzz-ok"
EVIL = "evil-value"
FRAMING_TOKENS = {"content-length", "transfer-encoding", "host"}

# Path segments, by what the gateway may do with them.
WORDS = ["public", "admin", "raw", "files", "secret", "a", "B", "x.y", "a.", "...", "a%20b", "%41"]
DOTS = [".", "..", "%2e", "%2E", "%2e%2e", "%2E%2E", ".%2e", "%2e.", ".%2E", "%2E.", "%2e%2E"]
SLASHY = ["a%2Fb", "%2f", "%5C", "a%5cb", "%2F..%2F", "..%2f", "%2e%2e%5c"]
BACKSLASH = ["a\\b", "\\", "..\\", "\\.."]
ODD = ["%zz", "%", "%25", "%252e", "%252F", "..;", ";", "a;b=c", "%00", "%c0%ae", "%u002e", "a#b"]
# Framings, the well-formed ones twice as likely.
FRAMING_KINDS = ["none", "length", "chunked"] * 2 + ["bad-te", "cl-te", "two-lengths", "two-te"]
METHODS = ["GET"] * 3 + ["POST", "PUT", "PATCH", "DELETE"]
QUERIES = ["", "?q=1", "?x=/../y&z=%2F", "?a=%2e%2e/..", "?"]


def normalised(path: str) -> str | None:
    """The contract's normal form of a module path; None where it climbs above the root.
    Empty segments are merged first, then dot segments (any encoding) removed; a path ending
    in "/" or a dot segment keeps one trailing slash."""
    out: list[str] = []
    segments = path[1:].split("/")
    trailing = False
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        dots = segment.replace("%2e", ".").replace("%2E", ".") if len(segment) <= 6 else ""
        if dots in (".", ".."):
            if dots == "..":
                if not out:
                    return None
                out.pop()
            trailing = last
        elif segment:
            out.append(segment)
            trailing = False
        elif last:
            trailing = True
    text = "/" + "/".join(out)
    return text + "/" if trailing and out else text


# Routes of `edge_manifest` the fuzzer reaches, and where each forwards (all methods are
# routed for /public and /admin; the others are GET only).
def forwarded_path(norm: str) -> tuple[str, str | None]:
    """(route, expected upstream path) for a normalised path; route "" when none matches."""
    first = norm[1:].split("/", 1)[0]
    if first in ("public", "admin", "raw"):
        return first, "/base" + norm
    if first == "files":
        return "files", "/store/" + norm[len("/files/") :]
    return "", None


@dataclass
class Case:
    method: str
    path: str  # the module path as sent
    query: str
    absolute: str | None  # the authority of an absolute-form target
    lines: list[tuple[str, str]]
    body: bytes  # as written on the wire (chunked or not)
    sent: bytes  # the body the client meant (decoded)
    framing: str  # one of FRAMING_KINDS
    connection: list[str]

    def wire(self) -> bytes:
        target = PREFIX + self.path + self.query
        if self.absolute is not None:
            target = f"http://{self.absolute}{target}"
        head = [f"{self.method} {target} HTTP/1.1", *(f"{n}: {v}" for n, v in self.lines)]
        return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + self.body


def _cased(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper(), name.swapcase()])


@st.composite
def framings(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]], bytes, bytes]:
    """(kind, header lines, body on the wire, body meant)."""
    body = draw(
        st.sampled_from([b"", b"hello", b"0\r\n\r\n", b"GET /base/admin/x HTTP/1.1\r\n\r\n"])
    )
    body = body or draw(st.binary(max_size=40))
    kind = draw(st.sampled_from(FRAMING_KINDS))
    length, coding = draw(_cased("Content-Length")), draw(_cased("Transfer-Encoding"))
    chunk = chunked(body, draw(st.integers(1, 8))) if body else b"0\r\n\r\n"
    if kind == "none":
        return kind, [], b"", b""
    if kind == "length":
        return kind, [(length, str(len(body)))], body, body
    if kind == "chunked":
        return kind, [(coding, draw(_cased("chunked")))], chunk, body
    if kind == "bad-te":
        value = draw(st.sampled_from(["gzip, chunked", "chunked, chunked", "identity", "gzip"]))
        return kind, [(coding, value)], chunk, body
    if kind == "cl-te":
        return kind, [(length, str(len(chunk))), (coding, "chunked")], chunk, body
    if kind == "two-te":
        return kind, [(coding, "gzip"), (coding, "chunked")], chunk, body
    return kind, [(length, str(len(body))), (length, str(len(body) + 1))], body, body


@st.composite
def cases(draw: st.DrawFn, paths: st.SearchStrategy[str], heads: bool) -> Case:
    method = draw(st.sampled_from(METHODS))
    path = draw(paths)
    query = draw(st.sampled_from(QUERIES))
    absolute = draw(st.sampled_from([None] * 6 + ["gateway.test", "GATEWAY.test", "evil.test"]))
    lines: list[tuple[str, str]] = [(draw(_cased("Host")), HOST)]
    framing, body, sent, connection = "none", b"", b"", []
    if heads:
        framing, framing_lines, body, sent = draw(framings())
        lines += framing_lines
        tokens = ["keep-alive", "close", "X-Hop", "TE", "Upgrade", "x-forwarded-for"] * 2
        tokens += ["X-Request-ID", "x-module-id", "X-User-Id", "Keep-Alive"] * 2
        tokens += ["Content-Length", "content-length", "Transfer-Encoding", "HOST"]
        connection = draw(st.lists(st.sampled_from(tokens), max_size=3))
        if connection:
            split = draw(st.booleans()) and len(connection) > 1
            values = (
                [", ".join(connection[:1]), ", ".join(connection[1:])]
                if split
                else [", ".join(connection)]
            )
            lines += [(draw(_cased("Connection")), value) for value in values]
        lines += [("X-Hop", "hop")] if "X-Hop" in connection else []
        if draw(st.booleans()):
            lines.append(("Upgrade", draw(st.sampled_from(["websocket", "h2c"]))))
    underscored = [name.replace("-", "_") for name in (*IDENTITY_HEADERS, "X-Real-IP")]
    claims = [*IDENTITY_HEADERS, *underscored, "Forwarded", "X-Real-IP"]
    forged = draw(st.lists(st.sampled_from(claims)))
    lines += [(draw(_cased(name)), EVIL) for name in forged]
    if draw(st.booleans()):
        lines.append(("X-Forwarded-For", "203.0.113.66"))
    lines = draw(st.permutations(lines))
    return Case(method, path, query, absolute, lines, body, sent, framing, connection)


def _paths(segments: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    first = st.sampled_from(["public"] * 4 + ["admin", "raw", "files", "", "..", "%2e"])
    rest = st.lists(segments, max_size=6)
    return st.builds(lambda f, r: "/" + "/".join([f, *r]), first, rest)


# Clean segments weigh more, so that about half the cases get through to the upstream.
ANY_SEGMENT = st.sampled_from([*WORDS * 3, *DOTS, "", "", *SLASHY, *BACKSLASH, *ODD])
# The heads fuzzer's paths: mostly under /public, dots included.
HEAD_PATHS = st.builds(
    lambda rest: "/public/" + "/".join(rest),
    st.lists(st.sampled_from([*WORDS * 2, *DOTS, ""]), max_size=4),
)


def expected_statuses(case: Case) -> set[int] | None:
    """The statuses the contract allows for this case, or None where it leaves a choice."""
    refusals: set[int] = set()
    if FRAMING_TOKENS & {token.lower() for token in case.connection}:
        refusals |= {400}
    if case.framing == "bad-te":
        refusals |= {400, 501}
    elif case.framing in ("cl-te", "two-lengths", "two-te"):
        refusals |= {400}
    if case.absolute is not None and case.absolute.lower() != HOST:
        refusals |= {400}
    if any(s in case.path for s in BACKSLASH):
        refusals |= {400}
    norm = normalised(case.path)
    if norm is None:
        return refusals | {400}
    # An encoded slash in a segment that a ".." removed may be refused or not (the contract
    # says "anywhere in the module path"; what is forwarded has none either way).
    slashy = "%2f" in norm.lower() or "%5c" in norm.lower()
    removed_slash = not slashy and ("%2f" in case.path.lower() or "%5c" in case.path.lower())
    odd = removed_slash or any(s in case.path for s in ODD)
    route, _ = forwarded_path(norm)
    method_routed = case.method == "GET" or route in ("public", "admin")
    if route == "admin":
        refusals |= {401}
    elif not route or not method_routed:
        refusals |= {404, 405}
    if route != "raw" and slashy:
        refusals |= {400}
    if refusals:
        return refusals | ({400} if odd else set())
    if odd or norm.rstrip("/") in ("/public", "/admin", "/raw", "/files", ""):
        return None
    return {200}


async def check(
    name: str, case: Case, gateway: RunningGateway, upstream: RawUpstream
) -> RawResponse:
    """Send the case and assert every invariant (counted under `name`); returns the response."""
    FUZZ_STATS[f"{name}: examples"] += 1
    before = len(upstream.requests)
    r = await exchange(gateway.port, case.wire())
    await asyncio.sleep(0.005)  # a smuggled second request would be parsed by now
    new = upstream.requests[before:]
    allowed = expected_statuses(case)
    assert allowed is None or r.status in allowed, (r.status, sorted(allowed), r.body[:200])
    if r.status == 200 and r.body == OK:
        assert len(new) == 1, [seen.target for seen in new]
        _check_forwarded(case, new[0])
    else:
        assert 400 <= r.status < 500 or r.status in (501, 505), (r.status, r.body[:200])
        assert_error(r, r.status)
        assert new == [], [seen.target for seen in new]
    FUZZ_STATS[f"{name}: answered {r.status}"] += 1
    return r


def _check_forwarded(case: Case, seen: SeenRequest) -> None:
    norm = normalised(case.path)
    assert norm is not None
    route, path = forwarded_path(norm)
    assert route and route != "admin", seen.target
    assert seen.method == case.method
    # An empty query ("?" alone) may be dropped; any other is forwarded as sent.
    assert seen.target in {path + case.query, path + case.query.rstrip("?")}
    target_path = seen.target.partition("?")[0]
    assert "//" not in target_path and "\\" not in target_path
    assert "#" not in seen.target, seen.target
    segments = target_path.lower().replace("%2e", ".").split("/")
    assert "." not in segments and ".." not in segments, seen.target
    # Nor a dot segment behind path parameters ("..;x"), which servlet containers resolve.
    bases = {segment.partition(";")[0] for segment in segments}
    assert "." not in bases and ".." not in bases, seen.target
    # Nor a header name a CGI/WSGI upstream would read as another (X_User_Id).
    assert all("_" not in name for name, _ in seen.headers), seen.headers
    if route != "raw":
        assert "%2f" not in target_path.lower() and "%5c" not in target_path.lower()
    # Framing: the gateway's own, and the body arrived whole.
    assert seen.body == case.sent
    lengths, codings = seen.header("Content-Length"), seen.header("Transfer-Encoding")
    assert len(lengths) + len(codings) <= 1, seen.headers
    assert codings in ([], ["chunked"]), codings
    if lengths:
        assert lengths == [str(len(case.sent))]
    if case.method in ("POST", "PUT", "PATCH") and not case.sent and not codings:
        assert lengths == ["0"], seen.headers
    # Headers: the gateway's, never the client's claims.
    assert all(EVIL not in value for _, value in seen.headers), seen.headers
    assert seen.header("Forwarded") == [] and seen.header("X-Real-IP") == []
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header("X-Module-Id") == [MODULE_ID]
    assert len(seen.header("X-Request-ID")) == 1 and len(seen.header("Host")) == 1
    assert "X-Hop" not in case.connection or seen.header("X-Hop") == []


@pytest.fixture
async def fuzz_edge(raw_upstreams: StartUpstream, edge_gateway: StartGateway) -> Any:
    upstream = await raw_upstreams(repeat=response(OK))
    gateway = await edge_gateway(upstream)
    yield gateway, upstream
    # Whatever the examples did, every byte that reached the upstream was one whole request.
    begun = sum(requests_begun(bytes(data)) for data in upstream.received)
    assert begun == len(upstream.requests), (
        f"the upstream saw {begun} request starts but {len(upstream.requests)} whole requests:"
        " a request was smuggled in, or cut short"
    )


@FUZZ
@given(case=cases(_paths(ANY_SEGMENT), heads=False))
async def test_fuzz_paths(fuzz_edge: tuple[RunningGateway, RawUpstream], case: Case) -> None:
    await check("paths", case, *fuzz_edge)


@FUZZ
@given(case=cases(HEAD_PATHS, heads=True))
async def test_fuzz_heads(fuzz_edge: tuple[RunningGateway, RawUpstream], case: Case) -> None:
    await check("heads", case, *fuzz_edge)


@FUZZ
@given(case=cases(_paths(ANY_SEGMENT), heads=True))
async def test_fuzz_everything(fuzz_edge: tuple[RunningGateway, RawUpstream], case: Case) -> None:
    await check("everything", case, *fuzz_edge)
