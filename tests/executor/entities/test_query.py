"""Every way a list's query, a body or an id is refused: 400 validation_failed with details
naming the parameter or field, all problems at once; never ignored."""

from __future__ import annotations

import pytest

from proxy.errors import ValidationFailed
from proxy.executor.entities import cursor as cursors
from proxy.executor.entities.body import writable_values
from proxy.executor.entities.query import parse_list_query
from tests.executor.entities.products import ENTITY, schema

BAD_QUERIES = [
    ([("page", "0")], "page must be an integer from 1 to 1000000000, got '0'"),
    ([("page", "x")], "page must be an integer from 1 to 1000000000, got 'x'"),
    ([("page", "")], "page must be an integer from 1 to 1000000000, got ''"),
    ([("limit", "0")], "limit must be an integer from 1 to 100, got '0'"),
    ([("limit", "101")], "limit must be an integer from 1 to 100, got '101'"),
    ([("limit", "-1")], "limit must be an integer from 1 to 100, got '-1'"),
    ([("limit", "1"), ("limit", "2")], "limit is given more than once"),
    ([("sort", "sku")], "sort: 'sku' is not sortable (one of name, price, stock, created_at)"),
    ([("sort", "secret")], "sort: 'secret' is not sortable (one of name, price, stock, "
                           "created_at)"),
    ([("order", "up")], "order must be asc or desc, got 'up'"),
    ([("search", "")], "search must not be empty"),
    ([("search", "a"), ("search", "b")], "search is given more than once"),
    ([("color", "red")], "color is not a query parameter of products"),
    ([("Name", "x")], "Name is not a query parameter of products"),
    ([("name[eq", "x")], "name[eq is not a query parameter of products"),
    ([("note", "x")], "note: note cannot be filtered on (filters: name, sku, price, stock, "
                      "active, tags, meta, created_at)"),
    ([("secret", "x")], "secret: secret cannot be filtered on (filters: name, sku, price, "
                        "stock, active, tags, meta, created_at)"),
    ([("name[foo]", "x")], "name[foo]: unknown operator 'foo' (one of eq, neq, gt, gte, lt, "
                           "lte, in, like, ilike, is)"),
    ([("name[]", "x")], "name[]: unknown operator '' (one of eq, neq, gt, gte, lt, lte, in, "
                        "like, ilike, is)"),
    ([("name", "a"), ("name[eq]", "b")], "name[eq] is given more than once"),
    ([("stock", "x")], "stock must be an integer, got 'x'"),
    ([("stock", "")], "stock must be an integer, got ''"),
    ([("stock[gt]", "1.5")], "stock[gt] must be an integer, got '1.5'"),
    ([("stock", "99999999999999999999")], "stock must be an integer, got '99999999999999999999'"),
    ([("price", "ten")], "price must be a number, got 'ten'"),
    ([("price", "NaN")], "price must be a number, got 'NaN'"),
    ([("active", "yes")], "active must be true or false, got 'yes'"),
    ([("created_at[gt]", "yesterday")], "created_at[gt] must be an ISO 8601 timestamp, got "
                                        "'yesterday'"),
    ([("stock[in]", "1,x")], "stock[in] must be a comma list of integers, got 'x'"),
    ([("stock[in]", "")], "stock[in] must be a comma list of integers, got ''"),
    ([("stock[like]", "1*")], "stock[like]: only string and text fields take like"),
    ([("price[ilike]", "1*")], "price[ilike]: only string and text fields take ilike"),
    ([("name[is]", "true")], "name[is] must be null, got 'true'"),
    ([("active[is]", "maybe")], "active[is] must be null, true or false, got 'maybe'"),
    ([("tags", "x")], "tags: tags is a array field; it takes only tags[is]"),
    ([("meta[eq]", "{}")], "meta[eq]: meta is a jsonb field; it takes only meta[is]"),
    ([("cursor", "!!")], "cursor is not one this endpoint made"),
    ([("cursor", "")], "cursor is not one this endpoint made"),
    ([("cursor", "W10")], "cursor is not one this endpoint made"),  # []
]  # fmt: skip


@pytest.mark.parametrize(("query", "detail"), BAD_QUERIES)
def test_a_bad_list_query_is_refused_naming_it(query: list[tuple[str, str]], detail: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query(query, schema())
    assert caught.value.details == [detail]
    assert (caught.value.status, caught.value.code) == (400, "validation_failed")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query([("limit", "0"), ("x", "1"), ("order", "sideways")], schema())
    assert caught.value.details == [
        "x is not a query parameter of products",
        "limit must be an integer from 1 to 100, got '0'",
        "order must be asc or desc, got 'sideways'",
    ]


def test_a_cursor_only_continues_its_own_selection() -> None:
    s = schema()
    first = parse_list_query([("sort", "name"), ("name[neq]", "x")], s)
    token = cursors.encode('["b", "00000000-0000-4000-8000-000000000000"]', 2, first.fingerprint)
    again = parse_list_query([("name[neq]", "x"), ("sort", "name"), ("cursor", token)], s)
    assert again.after is not None and again.page == 2 and again.offset == 0
    for other in (
        [("sort", "name"), ("order", "asc")],
        [("sort", "price"), ("name[neq]", "x")],
        [("sort", "name"), ("name[neq]", "y")],
        [("sort", "name"), ("name[neq]", "x"), ("search", "a")],
    ):
        with pytest.raises(ValidationFailed) as caught:
            parse_list_query([*other, ("cursor", token)], s)
        assert caught.value.details == [
            "cursor was made for another sort, order, search or filters"
        ]
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query(
            [("sort", "name"), ("name[neq]", "x"), ("cursor", token), ("page", "2")], s
        )
    assert caught.value.details == [
        "page cannot be combined with cursor (the cursor knows its page)"
    ]


def test_search_needs_searchable_fields() -> None:
    entity = {**ENTITY, "searchable": []}
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query([("search", "x")], schema(entity))
    assert caught.value.details == ["search: products has no searchable fields"]


def test_defaults_and_reserved_names() -> None:
    q = parse_list_query([], schema())
    assert (q.page, q.limit, q.sort, q.descending, q.search, q.filters, q.after) == (
        1, 20, "created_at", True, None, (), None,
    )  # fmt: skip
    no_created = {**ENTITY, "fields": [f for f in ENTITY["fields"] if f["name"] != "created_at"],
                  "filters": ["name"], "sortable": ["name"]}  # fmt: skip
    assert parse_list_query([], schema(no_created)).sort == "id"
    assert parse_list_query([("sort", "created_at")], schema()).sort == "created_at"


BAD_BODIES = [
    ({}, "create", ["name is required"]),
    ({"name": None}, "create", ["name must not be null"]),
    ({"name": None}, "patch", ["name must not be null"]),
    ({"name": 1}, "patch", ["name must be of type string"]),
    ({"name": "x", "stock": 1.5}, "create", ["stock must be of type integer"]),
    ({"name": "x", "stock": True}, "create", ["stock must be of type integer"]),
    ({"name": "x", "stock": 2**63}, "create", ["stock must be of type integer"]),
    ({"name": "x", "price": "ten"}, "create", ["price must be of type decimal"]),
    ({"name": "x", "price": False}, "create", ["price must be of type decimal"]),
    ({"name": "x", "active": "true"}, "create", ["active must be of type boolean"]),
    ({"name": "x", "tags": "a"}, "create", ["tags must be of type array"]),
    ({"stock": 1}, "replace", ["name is required"]),
    ({"name": [], "note": {}}, "create", ["name must be of type string",
                                          "note must be of type string"]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "mode", "details"), BAD_BODIES)
def test_a_bad_body_is_refused_naming_the_fields(body: dict, mode: str, details: list[str]) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationFailed) as caught:
        writable_values(schema(), body, mode)  # type: ignore[arg-type]
    assert caught.value.details == details


@pytest.mark.parametrize("body", [None, [], "x", 1])
def test_a_body_must_be_an_object(body: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        writable_values(schema(), body, "patch")
    assert caught.value.details == ["body must be a JSON object"]


def test_readonly_hidden_and_site_id_are_dropped() -> None:
    body = {"name": "x", "id": "y", "secret": "s", "site_id": "z", "created_at": "t",
            "updated_at": "u", "meta": None}  # fmt: skip
    assert writable_values(schema(), body, "create") == {"name": "x", "meta": None}


def test_keys_that_are_no_field_are_refused() -> None:
    body = {"name": "x", "colour": "red", "Name": "y", "site_id": "z"}
    with pytest.raises(ValidationFailed) as caught:
        writable_values(schema(), body, "patch")
    assert caught.value.details == [
        "colour is not a field of products",
        "Name is not a field of products",
    ]
