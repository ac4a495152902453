"""Issue 12, finding 2: paths are normalised before matching, and what is forwarded is what
was authorised.

The routes are `edge_manifest`'s: `/public/*` anonymous, `/admin/*` needing a scope, `/raw/*`
keeping encoded slashes, and handler_url routes `/pub/:name` -> /files/:name, `/files/*` ->
/store/* and `/kfiles/*` -> /kstore/* (encoded slashes kept). The module upstream is
`<raw upstream>/base`, so a module-upstream route forwards to `/base` + the normalised path.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.edge import (
    ADMIN_KEY,
    ADMIN_SCOPE,
    RawResponse,
    RunningGateway,
    StartGateway,
    StartUpstream,
    assert_error,
    assert_gateway_head,
    raw_request,
)
from tests.support.raw_upstream import RawUpstream, response

PREFIX = "/api/modules/crm"


@pytest.fixture
async def edge(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> tuple[RunningGateway, RawUpstream]:
    upstream = await raw_upstreams(repeat=response(b"upstream-ok"))
    return await edge_gateway(upstream), upstream


async def _get(
    edge: tuple[RunningGateway, RawUpstream], path: str, *headers: tuple[str, str]
) -> RawResponse:
    gateway, _ = edge
    return await gateway.exchange(raw_request("GET", PREFIX + path, headers))


async def _forwarded(edge: tuple[RunningGateway, RawUpstream], path: str) -> str:
    """The target of the one upstream request a GET of `path` made (which must succeed)."""
    _, upstream = edge
    before = len(upstream.requests)
    r = await _get(edge, path)
    assert (r.status, r.body) == (200, b"upstream-ok"), (path, r.status, r.body[:200])
    assert len(upstream.requests) == before + 1
    assert_gateway_head(upstream.requests[-1], upstream)
    assert upstream.requests[-1].header("X-Forwarded-For") == ["127.0.0.1"]
    return upstream.requests[-1].target


async def _refused(
    edge: tuple[RunningGateway, RawUpstream],
    path: str,
    status: int | tuple[int, ...],
    code: str | None = None,
) -> None:
    _, upstream = edge
    r = await _get(edge, path)
    assert_error(r, status, code)
    await asyncio.sleep(0.02)
    assert upstream.requests == [], [seen.target for seen in upstream.requests]


# Every way of spelling "up one level" that the reproduction and its cousins use.
TO_ADMIN = [
    "/public/../admin/secret",
    "/public/%2e%2e/admin/secret",
    "/public/%2E%2E/admin/secret",
    "/public/.%2E/admin/secret",
    "/public/%2e./admin/secret",
    "/public/%2E%2e/admin/secret",
    "/public/x/../../admin/secret",
    "/public/./../admin/secret",
    "/public/%2e/%2e%2e/admin/secret",
    "/public//..//admin/secret",
    "/public/x/%2e%2e/%2E%2E/admin/secret",
]


@pytest.mark.parametrize("path", TO_ADMIN)
async def test_dot_segments_are_matched_after_normalisation(
    edge: tuple[RunningGateway, RawUpstream], path: str
) -> None:
    """The issue's bypass: anonymous, the admin resource is refused (401) and nothing reaches
    the upstream; with the admin key it is the admin route that answers, at its real path."""
    await _refused(edge, path, 401, "unauthorized")
    gateway, upstream = edge
    r = await gateway.exchange(raw_request("GET", PREFIX + path, [("X-API-Key", ADMIN_KEY)]))
    assert r.status == 200
    assert [seen.target for seen in upstream.requests] == ["/base/admin/secret"]
    assert_gateway_head(upstream.requests[0], upstream, anonymous=False)
    assert upstream.requests[0].header("X-Scopes") == [ADMIN_SCOPE]


@pytest.mark.parametrize(
    ("path", "forwarded"),
    [
        ("/public/a/../b", "/base/public/b"),
        ("/public/./b", "/base/public/b"),
        ("/public/%2e/b", "/base/public/b"),
        ("/public/a/%2E%2e/b", "/base/public/b"),
        ("/public/a/.%2e/b", "/base/public/b"),
        ("/public//a///b", "/base/public/a/b"),
        ("//public/a", "/base/public/a"),
        ("/public/a/", "/base/public/a/"),
        ("/public/a/.", "/base/public/a/"),
        ("/public/a/b/..", "/base/public/a/"),
        ("/public/a.", "/base/public/a."),
        ("/public/..a/b../...", "/base/public/..a/b../..."),
        ("/public/a%20b/%7E/%41", "/base/public/a%20b/%7E/%41"),
        ("/public/%252e%252e/x", "/base/public/%252e%252e/x"),
        ("/public/a;b=c/d", "/base/public/a;b=c/d"),
        ("/public/a/../b?x=/../y&z=%2F", "/base/public/b?x=/../y&z=%2F"),
    ],
)
async def test_forwarded_path_is_the_normalised_path(
    edge: tuple[RunningGateway, RawUpstream], path: str, forwarded: str
) -> None:
    """Dot segments removed, empty segments merged, one trailing slash kept, everything else
    (and the query) byte for byte as sent."""
    assert await _forwarded(edge, path) == forwarded


@pytest.mark.parametrize(
    "path",
    ["/..", "/../public/a", "/public/../..", "/%2e%2e/public/a", "/public/a/../../../x", "/.%2E"],
)
async def test_climbing_above_the_module_root_is_refused(
    edge: tuple[RunningGateway, RawUpstream], path: str
) -> None:
    await _refused(edge, path, 400, "bad_request")


@pytest.mark.parametrize(
    "path", ["/public/a\\b", "/public/..\\admin/secret", "/public\\..\\admin\\secret", "/files/\\"]
)
async def test_raw_backslash_is_refused(
    edge: tuple[RunningGateway, RawUpstream], path: str
) -> None:
    await _refused(edge, path, 400)


@pytest.mark.parametrize("path", ["/pub/..", "/pub/%2e%2e", "/pub/.", "/pub/%2E", "/pub/x/.."])
async def test_a_dot_parameter_never_reaches_a_handler_url(
    edge: tuple[RunningGateway, RawUpstream], path: str
) -> None:
    """`:name` = ".." was forwarded as /files/..; now the dots are gone before matching, so
    these paths match no route (or are refused outright): never forwarded."""
    await _refused(edge, path, (400, 404))


@pytest.mark.parametrize(
    ("path", "forwarded"),
    [
        ("/pub/a.b", "/files/a.b"),
        ("/pub/a%20b", "/files/a%20b"),
        ("/pub/a..", "/files/a.."),
        ("/files/a/b", "/store/a/b"),
        ("/files/a/./b/../c", "/store/a/c"),
        ("/files/a%20b//c", "/store/a%20b/c"),
    ],
)
async def test_handler_url_gets_normalised_values(
    edge: tuple[RunningGateway, RawUpstream], path: str, forwarded: str
) -> None:
    assert await _forwarded(edge, path) == forwarded


@pytest.mark.parametrize(
    "path",
    [
        "/public/a%2Fb",
        "/public/a%2fb",
        "/public/a%5Cb",
        "/public/a%5cb",
        "/public/%2F..%2Fadmin/secret",
        "/files/a%2Fb/c",
        "/files/%2f",
        "/pub/a%2Fb",
        "/pub/a%5c",
    ],
)
async def test_encoded_slashes_are_refused_by_default(
    edge: tuple[RunningGateway, RawUpstream], path: str
) -> None:
    await _refused(edge, path, 400, "bad_request")


@pytest.mark.parametrize(
    ("path", "forwarded"),
    [
        ("/raw/a%2Fb", "/base/raw/a%2Fb"),
        ("/raw/a%2fb/c", "/base/raw/a%2fb/c"),
        ("/raw/a%5Cb", "/base/raw/a%5Cb"),
        ("/raw/x/../a%2Fb", "/base/raw/a%2Fb"),
        ("/kfiles/a%2Fb/c", "/kstore/a%2Fb/c"),
        ("/kfiles/a%2fb", "/kstore/a%2fb"),
        ("/kfiles/a%5Cb//c", "/kstore/a%5Cb/c"),
    ],
)
async def test_encoded_slashes_kept_encoded_where_a_route_opts_in(
    edge: tuple[RunningGateway, RawUpstream], path: str, forwarded: str
) -> None:
    """`encoded_slashes: keep`: forwarded still encoded, never decoded into a separator (nor
    encoded twice), for the module upstream and a handler_url's `*` alike."""
    assert await _forwarded(edge, path) == forwarded


@pytest.mark.parametrize(
    "path",
    [
        "/raw/%2e%2e%2Fx",
        "/raw/..%2Fadmin%2Fsecret",
        "/raw/a%5C..",
        "/kfiles/.%2Fx",
        "/kfiles/x%2F..",
    ],
)
async def test_kept_encoded_slashes_cannot_hide_dot_segments(
    edge: tuple[RunningGateway, RawUpstream], path: str
) -> None:
    """Even where a route keeps encoded slashes, a segment that holds a dot segment once an
    upstream decodes its separators is refused: such an upstream would climb out of the route."""
    await _refused(edge, path, 400, "bad_request")


@pytest.mark.parametrize(
    "path",
    [
        "/public/x#/../admin",  # upstreams cut the path at '#'
        "/admin/secret#",
        "/public/..;/admin/secret",  # servlet containers drop ';...' and climb
        "/public/%2e%2e;x=1/admin/secret",
        "/public/.;/x",
    ],
)
async def test_fragments_and_parameterised_dot_segments_are_refused(
    edge: tuple[RunningGateway, RawUpstream], path: str
) -> None:
    await _refused(edge, path, 400, "bad_request")


async def test_path_parameters_on_other_segments_pass_as_sent(
    edge: tuple[RunningGateway, RawUpstream],
) -> None:
    assert await _forwarded(edge, "/public/a;v=1/b;x") == "/base/public/a;v=1/b;x"
