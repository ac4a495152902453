"""Fixtures of the edge suite: gateways served as a worker serves them, stopped at the end of
the test before the raw-socket upstreams they were pooled to (`raw_upstreams`, in
tests/conftest.py). The fuzz tests' summary is printed by tests/conftest.py, which also sees
the counts of xdist workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.edge import (
    RunningGateway,
    StartGateway,
    StartUpstream,
    edge_manifest,
    start_gateway,
)
from tests.support.raw_upstream import RawUpstream


@pytest.fixture
async def edge_gateway(tmp_path: Path, raw_upstreams: StartUpstream) -> AsyncIterator[StartGateway]:
    """`await edge_gateway(upstream, data=None, **settings)`: a gateway over `data` (default:
    `edge_manifest(upstream.url)`), on a free port, stopped after the test."""
    started: list[RunningGateway] = []

    async def start(
        upstream: RawUpstream, data: dict[str, Any] | None = None, **overrides: object
    ) -> RunningGateway:
        data = data if data is not None else edge_manifest(upstream.url)
        gateway = await start_gateway(tmp_path / f"gateway{len(started)}", data, **overrides)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.close()
