"""Build an in-process gateway (the real app, the real pipeline) over a routes manifest."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from proxy.server.app import build_public_app
from proxy.server.gateway import Gateway
from proxy.settings import load_settings

MODULE_ID = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"


def manifest(upstream: str | None, routes: list[dict[str, Any]], **module: Any) -> dict[str, Any]:
    """One module `crm`; routes are anonymous unless they say otherwise (auth tests do)."""
    routes = [{"requires_auth": False, **route} for route in routes]
    entry: dict[str, Any] = {"id": MODULE_ID, "name": "crm", "routes": routes, **module}
    if upstream is not None:
        entry["upstream"] = upstream
    return {"modules": [entry]}


def gateway_for(
    tmp_path: Path, data: Mapping[str, Any], **overrides: object
) -> tuple[Gateway, Any]:
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(dict(data)))
    config = tmp_path / "gateway.yaml"
    config.write_text("{}\n")
    # Rate limits are off unless a test is about them: polling tests would hit them.
    settings = load_settings(
        str(config),
        environ={},
        overrides={
            "routes_file": str(routes_file),
            "rate_limit_enabled": False,
            "access_log": False,
            **overrides,
        },
    )
    gateway = Gateway(settings)
    return gateway, build_public_app(gateway)
