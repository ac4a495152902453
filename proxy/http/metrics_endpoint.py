"""GET /metrics: the Prometheus text of this process, or with several workers all of theirs."""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

# Set by the supervisor for its workers: each writes its metrics there, a scrape sums them.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def scrape() -> bytes:
    """The metrics text: this process's registry, or with --workers every worker's summed."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


async def metrics_text(_request: web.Request) -> web.Response:
    return web.Response(body=scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST})
