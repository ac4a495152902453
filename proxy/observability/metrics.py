"""Prometheus metrics of the route store and the request path (base units, `modgate_` prefix)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ROUTE_RELOADS = Counter(
    "modgate_route_reloads_total",
    "Route table loads by source (file, postgres) and result (ok, error, compile_error).",
    ["source", "result"],
)
ROUTE_MODULES = Gauge("modgate_route_table_modules", "Modules with a compiled route table.")
ROUTE_TABLE_VERSION = Gauge(
    "modgate_route_table_version", "Registry version; increases on every table swap."
)
STORE_CONNECTED = Gauge(
    "modgate_store_listener_connected",
    "1 while the Postgres LISTEN connection is up (0 = serving the last good tables).",
)
STORE_RECONNECTS = Counter(
    "modgate_store_reconnects_total", "Reconnects of the Postgres LISTEN connection."
)
UPSTREAM_ERRORS = Counter(
    "modgate_upstream_errors_total",
    "Upstream failures by kind: unavailable (refused or dropped before a response), timeout,\n"
    "body_too_large, broken_response (failed mid-body), client_gone.",
    ["kind"],
)
