"""The routes manifest: what it accepts, and the exact message for each thing it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import ManifestError
from proxy.routing.manifest import load_manifest, parse_manifest

BAD = Path(__file__).parent / "manifests_bad"
MODULE_ID = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"


@pytest.mark.parametrize("path", sorted(BAD.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_manifest_message(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: ")
    expected = first.removeprefix("# expect: ").replace("{path}", str(path))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value) == expected


def test_missing_file() -> None:
    with pytest.raises(ManifestError, match=r"^nope\.yaml: file not found$"):
        load_manifest("nope.yaml")


def test_defaults_are_the_seed_columns_defaults() -> None:
    manifest = parse_manifest(
        {
            "modules": [
                {
                    "id": MODULE_ID.upper(),
                    "routes": [{"path": "/a", "method": "get", "handler_code": "return 1"}],
                }
            ]
        }
    )
    (module,) = manifest.modules
    assert module.id == MODULE_ID  # canonical lowercase, as Postgres returns UUIDs
    (route,) = module.routes
    assert route.method == "GET"
    assert route.handler_type == "function"
    assert route.requires_auth is True
    assert route.required_scopes == ()
    assert route.rate_limit_per_minute is None
    assert route.cache_ttl_seconds == 0


def test_every_field_round_trips() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    manifest = parse_manifest(
        {
            "modules": [
                {
                    "id": MODULE_ID,
                    "name": "crm",
                    "upstream": "https://crm.internal:8443/v1",
                    "routes": [
                        {
                            "path": "/contacts/:id",
                            "method": "PUT",
                            "handler_type": "proxy",
                            "handler_url": "http://svc/contacts/:id",
                            "handler_code": None,
                            "requires_auth": False,
                            "required_scopes": ["write:contacts"],
                            "rate_limit_per_minute": 30,
                            "cache_ttl_seconds": 5,
                            "summary": "Update",
                            "description": "Long text",
                            "request_schema": schema,
                            "response_schema": schema,
                        }
                    ],
                }
            ],
            "api_keys": [{"name": "k"}],
        }
    )
    route = manifest.modules[0].routes[0]
    assert route.required_scopes == ("write:contacts",)
    assert route.request_schema == schema
    assert manifest.modules[0].upstream == "https://crm.internal:8443/v1"
    assert manifest.api_keys == ({"name": "k"},)


def test_listen_placeholder_is_the_serving_gateways_address() -> None:
    route = {"path": "/self/*", "method": "GET", "handler_type": "proxy",
             "handler_url": "http://{listen}/api/m/*"}  # fmt: skip
    data = {"modules": [{"id": MODULE_ID, "upstream": "http://{listen}/up", "routes": [route]}]}
    (module,) = parse_manifest(data, listen="[::1]:8181").modules
    assert module.upstream == "http://[::1]:8181/up"
    assert module.routes[0].handler_url == "http://[::1]:8181/api/m/*"
    # Without a serving gateway's address (routes apply; listen port 0) it is refused.
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, "m.yaml")
    assert str(info.value) == (
        "m.yaml: modules[0].upstream: {listen} is resolved only by a gateway serving this file "
        "(routes_file) on a fixed port (listen not port 0); write the address"
    )


def test_empty_file_is_an_empty_manifest(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_manifest(path).modules == ()
