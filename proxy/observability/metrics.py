"""Every Prometheus metric modgate exports, in one place (`modgate_` prefix, base units).

Multiprocess: with `--workers N` the supervisor sets PROMETHEUS_MULTIPROC_DIR before the
workers start; prometheus-client then keeps each worker's values in files there and /metrics
(on whichever worker answers) sums them. Each gauge says how its per-worker values combine:
`max` for facts every worker shares (table version), `min` for "all workers are fine"
(connected), `livesum` for amounts (queue depth). With one worker the same code uses the
ordinary in-process registry.

Labels stay bounded: `module` is the module's alias (or id), `route` its template
(`/contacts/:id`, never a raw path; `unmatched` when nothing matched), `status` the code.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

# Sub-millisecond to tens of seconds: a proxy's own work is ~100 µs, an upstream's up to its
# timeout (30 s by default).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# -- requests --------------------------------------------------------------------------------
REQUESTS = Counter(
    "modgate_requests_total",
    "Requests answered, by module, route template, method and status code.",
    ["module", "route", "method", "status"],
)
REQUEST_DURATION = Histogram(
    "modgate_request_duration_seconds",
    "Time from request received to response finished, by module and route template.",
    ["module", "route"],
    buckets=LATENCY_BUCKETS,
)
CLIENT_CONNECTIONS = Gauge(
    "modgate_client_connections",
    "Open client connections on the public port.",
    multiprocess_mode="livesum",
)
CLIENT_CONNECTIONS_REFUSED = Counter(
    "modgate_client_connections_refused_total",
    "Client connections answered 503 too_many_connections and closed: the worker already held\n"
    "max_client_connections.",
)
CLIENT_TIMEOUTS = Counter(
    "modgate_client_timeouts_total",
    "Client connections closed for slowness, by phase: header (a request head not complete within\n"
    "client_header_timeout_seconds), body (a request body silent for client_body_timeout_seconds).",
    ["phase"],
)
UPSTREAM_DURATION = Histogram(
    "modgate_upstream_request_duration_seconds",
    "Time an upstream took to answer (headers and body), by upstream origin.",
    ["upstream"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "modgate_upstream_errors_total",
    "Upstream failures by kind: unavailable (refused or dropped before a response), timeout,\n"
    "body_too_large, broken_response (failed mid-body), client_gone.",
    ["kind"],
)

# -- route tables ------------------------------------------------------------------------------
ROUTE_RELOADS = Counter(
    "modgate_route_reloads_total",
    "Route table loads by source (file, postgres) and result (ok, error, compile_error).",
    ["source", "result"],
)
ROUTE_MODULES = Gauge(
    "modgate_route_table_modules", "Modules with a compiled route table.",
    multiprocess_mode="max",
)  # fmt: skip
ROUTE_ROUTES = Gauge(
    "modgate_route_table_routes", "Routes in all compiled tables.", multiprocess_mode="max"
)
ROUTE_TABLE_VERSION = Gauge(
    "modgate_route_table_version", "Registry version; increases on every table swap.",
    multiprocess_mode="max",
)  # fmt: skip
ROUTE_LAST_RELOAD = Gauge(
    "modgate_route_table_last_reload_timestamp_seconds",
    "Unix time of the last successful table swap.",
    multiprocess_mode="max",
)

# -- dependencies ----------------------------------------------------------------------------
STORE_CONNECTED = Gauge(
    "modgate_store_listener_connected",
    "1 while the Postgres LISTEN connection is up (0 = serving the last good tables).",
    multiprocess_mode="min",
)
STORE_RECONNECTS = Counter(
    "modgate_store_reconnects_total", "Reconnects of the Postgres LISTEN connection."
)
RATELIMIT_FALLBACK = Gauge(
    "modgate_ratelimit_fallback_active",
    "1 while Redis is failing and the failure policy decides (see redis_failure_policy).",
    multiprocess_mode="max",
)
REDIS_ERRORS = Counter(
    "modgate_redis_errors_total",
    "Failed Redis rate-limit calls by kind (timeout, error).",
    ["kind"],
)
REDIS_CALL_SECONDS = Histogram(
    "modgate_redis_call_seconds",
    "Rate-limit calls to Redis, from queued to answered (one per batch, its oldest call):\n"
    "what redis_timeout_seconds is compared with.",
    buckets=(0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

# -- auth and limits -------------------------------------------------------------------------
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
    "Key usage counts (requests) dropped: too_many_keys (too many distinct keys were pending a\n"
    "write) or shutdown (not written by the end of the shutdown grace).",
    ["reason"],
)
USAGE_FLUSH_FAILURES = Counter(
    "modgate_key_usage_flush_failures_total",
    "Batched key usage writes that failed (the counts are kept and retried with backoff).",
)
RATELIMIT_DECISIONS = Counter(
    "modgate_ratelimit_decisions_total",
    "Rate-limit decisions: decision (allowed, limited, quota) by backend (redis, local, open);\n"
    "local while Redis is down is the fallback.",
    ["decision", "backend"],
)

# -- request log -------------------------------------------------------------------------------
LOG_QUEUE_DEPTH = Gauge(
    "modgate_request_log_queue_depth",
    "Request log rows waiting to be written to module_api_logs (queued or being retried).",
    multiprocess_mode="livesum",
)
LOG_WRITTEN = Counter(
    "modgate_request_log_written_total", "Request log rows written to module_api_logs."
)
LOG_DROPPED = Counter(
    "modgate_request_log_dropped_total",
    "Request log rows lost: queue_full (the queue was full: Postgres slow, or down longer than\n"
    "the queue holds), write_failed (Postgres refused the rows) or shutdown (not written by the\n"
    "end of the shutdown grace).",
    ["reason"],
)

# Series with known label values exist from the start at 0, so `increase()` sees the first
# failure instead of a series appearing out of nowhere.
for _reason in ("queue_full", "write_failed", "shutdown"):
    LOG_DROPPED.labels(reason=_reason)
for _reason in ("too_many_keys", "shutdown"):
    USAGE_DROPPED.labels(reason=_reason)
for _kind in ("timeout", "error"):
    REDIS_ERRORS.labels(kind=_kind)
for _phase in ("header", "body"):
    CLIENT_TIMEOUTS.labels(phase=_phase)

# -- handler pool ------------------------------------------------------------------------------
EXECUTOR_CALLS = Counter(
    "modgate_executor_calls_total",
    "Handler calls in the executor by outcome: ok, thrown, timeout, memory, syntax, bad_result,\n"
    "crashed, rejected (worker busy: queue full or deadline while waiting), module_busy (the\n"
    "module at executor_module_concurrency, likewise), invalid (bad request), unauthorized,\n"
    "entity_failed (an entity call answered 5xx; its 4xx count as invalid).",
    ["outcome"],
)
EXECUTOR_DURATION = Histogram(
    "modgate_executor_call_duration_seconds",
    "Time a handler call took in the executor, queueing included.",
    buckets=LATENCY_BUCKETS,
)
EXECUTOR_IN_PROGRESS = Gauge(
    "modgate_executor_calls_in_progress", "Handler calls running.", multiprocess_mode="livesum"
)
EXECUTOR_WAITING = Gauge(
    "modgate_executor_calls_waiting",
    "Handler calls waiting for a free slot.",
    multiprocess_mode="livesum",
)
HANDLER_POOL_REQUESTS = Counter(
    "modgate_handler_pool_requests_total",
    "The gateway's calls to the handler pool by result: ok (the pool answered, whatever the\n"
    "handler did), unavailable (refused or broken connection), timeout, too_large (an answer\n"
    "past executor_max_response_bytes), unauthorized (the pool refused executor_token).",
    ["result"],
)


# -- label children bound once ------------------------------------------------------------------
# Label tuples kept per metric: past it, each call binds anew (correct, only slower), so label
# values that turn out unbounded cannot grow a worker's memory.
_MAX_BOUND_CHILDREN = 50_000


class BoundLabels(Generic[M]):
    """A metric's children, each bound once per tuple of label values (in label order).

    `.labels()` checks and joins its values on every call (about 1 us, more than the local
    rate-limit bucket costs), so hot-path code asks this instead: one dict lookup.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[object, ...], M] = {}

    def __call__(self, *values: object) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._metric.labels(*values)
            if len(self._children) < _MAX_BOUND_CHILDREN:
                self._children[values] = child
        return child

    def __repr__(self) -> str:
        return f"<BoundLabels {self._metric._name} children={len(self._children)}>"
