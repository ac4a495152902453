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
KEY_LOOKUPS = Counter(
    "modgate_api_key_lookups_total",
    "API-key lookups by result: hit, negative_hit, unknown (not an indexed key, no query),\n"
    "throttled (lookup budget spent), db_found, db_unknown, error.",
    ["result"],
)
AUTH_FAILURES = Counter(
    "modgate_auth_failures_total",
    "Requests refused by authentication (401) or authorization (403), by reason.",
    ["reason"],
)
USAGE_DROPPED = Counter(
    "modgate_key_usage_dropped_total",
    "Key usage counts dropped because too many distinct keys were pending a write.",
)
USAGE_FLUSH_FAILURES = Counter(
    "modgate_key_usage_flush_failures_total",
    "Batched key usage writes that failed (the counts are kept for the next flush).",
)
RATELIMIT_DECISIONS = Counter(
    "modgate_ratelimit_decisions_total",
    "Rate-limit decisions: decision (allowed, limited, quota) by backend (redis, local, open).",
    ["decision", "backend"],
)
RATELIMIT_FALLBACK = Gauge(
    "modgate_ratelimit_fallback_active",
    "1 while Redis is failing and the failure policy decides (see redis_failure_policy).",
)
REDIS_ERRORS = Counter(
    "modgate_redis_errors_total",
    "Failed Redis rate-limit calls by kind (timeout, error).",
    ["kind"],
)
