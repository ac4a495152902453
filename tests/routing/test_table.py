"""Compiled module tables: precomputed targets, and the registry's swap rules."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequest, RouteConflictError
from proxy.routing.model import ModuleSpec, RouteSpec
from proxy.routing.registry import RouteRegistry
from proxy.routing.table import ModuleTable, StaticBody, UpstreamTarget, compile_module
from tests.support.memory import retained_bytes

MODULE_ID = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"
OTHER_ID = "0b7e9a52-6a8f-4c55-9d6c-0cbbd3f1d2aa"


def _route(path: str, method: str = "GET", **kw: object) -> RouteSpec:
    kw.setdefault("handler_type", "static")
    kw.setdefault("handler_code", "x")
    return RouteSpec(path=path, method=method, **kw)  # type: ignore[arg-type]


def test_static_body_content_type() -> None:
    assert StaticBody.from_code('{"a": [1]}').content_type == "application/json"
    assert StaticBody.from_code("42").content_type == "application/json"
    assert StaticBody.from_code("hello").content_type == "text/plain; charset=utf-8"
    assert StaticBody.from_code("héllo").body == "héllo".encode()


@pytest.mark.parametrize(
    ("handler_url", "params", "query", "expected"),
    [
        ("http://s/x", {}, "", "http://s/x"),
        ("http://s/x", {}, "a=1", "http://s/x?a=1"),
        ("http://s/x?k=v", {}, "a=1", "http://s/x?k=v&a=1"),
        ("http://s/c/:id", {"id": "a b/c"}, "", "http://s/c/a%20b%2Fc"),
        ("http://s/{braces}/:id", {"id": "7"}, "", "http://s/{braces}/7"),
    ],
)
def test_handler_url_targets(
    handler_url: str, params: dict[str, str], query: str, expected: str
) -> None:
    target = UpstreamTarget.for_handler_url(handler_url)
    assert target.url_for("/ignored", query, params) == expected


def test_handler_url_star_takes_the_raw_rest_of_the_path() -> None:
    """`*` is the rest of the path as sent: an encoded slash stays encoded (the decoded param
    is "a/b", which must never become a separator upstream)."""
    route = RouteSpec(
        path="/files/:id/*",
        method="GET",
        handler_type="proxy",
        handler_url="http://s/c/:id/f/*",
        encoded_slashes="keep",
    )
    table = compile_module(ModuleSpec(id=MODULE_ID, routes=(route,)))
    path = "/files/1%202/x/y%20z/a%2Fb"
    match = table.match(path, "GET")
    assert match.params == {"id": "1 2", "*": "x/y z/a/b"}
    assert match.payload.target is not None
    assert match.payload.target.url_for(path, "q", match.params) == (
        "http://s/c/1%202/f/x/y%20z/a%2Fb?q"
    )
    assert match.payload.target.url_for("/files/1", "", table.match("/files/1", "GET").params) == (
        "http://s/c/1/f/"
    )


def test_dot_segment_param_values_are_refused() -> None:
    target = UpstreamTarget.for_handler_url("http://s/pub/:name")
    for value in (".", ".."):
        with pytest.raises(BadRequest):
            target.url_for("/ignored", "", {"name": value})


def test_module_upstream_keeps_the_raw_path() -> None:
    spec = ModuleSpec(
        id=MODULE_ID,
        upstream="http://crm:8000/v1/",
        routes=(_route("/c/*", handler_type="proxy", handler_code=None),),
    )
    table = compile_module(spec)
    match = table.match("/c/a%2Fb", "GET")
    assert match.payload.target is not None
    assert match.payload.target.url_for("/c/a%2Fb", "x=1", match.params) == (
        "http://crm:8000/v1/c/a%2Fb?x=1"
    )
    assert match.template == "/c/*"


def test_proxy_without_any_target_does_not_compile() -> None:
    spec = ModuleSpec(id=MODULE_ID, routes=(_route("/a", handler_type="proxy", handler_code=None),))
    with pytest.raises(RouteConflictError, match="a proxy route needs handler_url"):
        compile_module(spec)


def test_conflict_message_names_the_module() -> None:
    spec = ModuleSpec(id=MODULE_ID, name="crm", routes=(_route("/c/:id"), _route("/c/:cid")))
    with pytest.raises(RouteConflictError) as info:
        compile_module(spec)
    assert str(info.value) == (
        "module crm: GET /c/:cid conflicts with GET /c/:id: "
        "both match the same paths with the same precedence"
    )


def test_registry_swaps_keeps_last_good_and_removes_only_on_success() -> None:
    registry = RouteRegistry()
    assert not registry.loaded and registry.lookup(MODULE_ID) is None
    good = ModuleSpec(id=MODULE_ID, name="crm", routes=(_route("/a"),))
    other = ModuleSpec(id=OTHER_ID, name="booking", routes=(_route("/b"),))
    assert registry.replace_all([good, other], source="test") == []
    assert registry.loaded
    first = registry.lookup("crm")
    assert first is not None and first is registry.lookup(MODULE_ID)

    broken = ModuleSpec(id=MODULE_ID, name="crm", routes=(_route("/c/:id"), _route("/c/:x")))
    errors = registry.update([broken], [], source="test")
    assert len(errors) == 1 and "conflicts with" in errors[0]
    assert registry.lookup("crm") is first  # last good table kept

    changed = ModuleSpec(id=OTHER_ID, name="booking", routes=(_route("/b2"),))
    registry.update([changed], [], source="test")
    booking = registry.lookup("booking")
    assert booking is not None and booking.match("/b2", "GET").template == "/b2"

    registry.update([], [OTHER_ID], source="test")
    assert registry.lookup("booking") is None and registry.lookup(OTHER_ID) is None

    registry.replace_all([], source="test")
    assert registry.lookup("crm") is None


def test_alias_never_shadows_an_id() -> None:
    registry = RouteRegistry()
    a = ModuleSpec(id=MODULE_ID, name="crm", routes=(_route("/a"),))
    b = ModuleSpec(id=OTHER_ID, name="crm", routes=(_route("/b"),))
    registry.replace_all([a, b], source="test")
    crm = registry.lookup("crm")
    assert crm is not None and crm.id == MODULE_ID
    other = registry.lookup(OTHER_ID)
    assert other is not None and other.id == OTHER_ID


def test_a_compiled_route_keeps_its_spec() -> None:
    static = _route("/a", summary="A", required_scopes=("read:a",))
    function = RouteSpec(path="/f/", method="POST", handler_code="return 1")
    table = compile_module(ModuleSpec(id=MODULE_ID, routes=(static, function)))
    served = table.match("/a", "GET").payload
    assert served.spec is static
    assert served.static is not None and served.static.body == b"x"
    code = table.match("/f", "POST").payload
    assert code.spec is function and code.template == "/f"
    assert code.handler_key is not None and code.handler_key.startswith("POST /f/:")


# Bytes a compiled module keeps per route (specs, compiled routes, trie), for the routes of
# bench/memory_bench.py: measured 679 on CPython 3.11 (the bench: 100k routes in 68 MiB).
ROUTE_BYTES_BUDGET = 750


def test_a_compiled_module_keeps_a_bounded_number_of_bytes_per_route() -> None:
    def compile_1000_routes() -> ModuleTable:
        routes = tuple(
            RouteSpec(
                path=f"/r{r}/:id/sub{r % 7}",
                method="GET",
                handler_type="proxy",
                required_scopes=("read:x",),
            )
            for r in range(1000)
        )
        return compile_module(ModuleSpec(id=MODULE_ID, upstream="http://u:8000", routes=routes))

    table, size = retained_bytes(compile_1000_routes)
    assert len(table) == 1000
    assert size / len(table) < ROUTE_BYTES_BUDGET
    assert table.match("/r999/7/sub5", "GET").params == {"id": "7"}
