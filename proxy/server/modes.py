"""The two modes a gateway runs in, one factory each: where routes and API keys come from,
and what is written back.

- embedded (no database_url): the routes manifest on disk, watched (`FileSource`); its keys
  are installed with it, nothing is written back.
- Postgres: `PostgresSource`, which is also the key directory's loader for cache misses; API
  consumers (a directory of their own, whose misses it loads too; consumers live only in
  Postgres, so the embedded mode has none); key and consumer usage, the request log
  (request_log_enabled) and its pruner (log_retention_days > 0) write through its pool, and
  /readyz reports its connection.

The factory decides which of these parts exist, so nothing downstream asks which mode it is in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.auth.consumers import ConsumerDirectory
from proxy.auth.key_directory import KeyDirectory
from proxy.auth.secret_box import SecretBox
from proxy.auth.usage import UsageRecorder
from proxy.observability.request_log import RequestLog
from proxy.routing.registry import RouteRegistry
from proxy.settings import Settings
from proxy.store.file_source import FileSource
from proxy.store.logs import LogPruner
from proxy.store.pg_source import DEFAULT_HEARTBEAT_SECONDS, PostgresSource
from proxy.store.source import Source

# A dependency's name in /readyz and how to read its state now ("connected", ...).
Dependency = tuple[str, Callable[[], str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Store:
    """What a mode adds to a gateway; None: the mode has no such part."""

    source: Source
    consumers: ConsumerDirectory | None = None
    usage: UsageRecorder | None = None
    consumer_usage: UsageRecorder | None = None
    request_log: RequestLog | None = None
    pruner: LogPruner | None = None
    dependencies: tuple[Dependency, ...] = ()


StoreFactory = Callable[[Settings, RouteRegistry, KeyDirectory], Store]


def embedded_store(settings: Settings, registry: RouteRegistry, keys: KeyDirectory) -> Store:
    """Routes and keys from `routes_file`; its `{listen}` is this gateway's public address."""
    source = FileSource(
        settings.routes_file,
        registry,
        keys,
        poll_seconds=settings.routes_poll_seconds,
        listen=settings.listen_addresses.public.local_authority(),
    )
    return Store(source=source)


def postgres_store(
    settings: Settings,
    registry: RouteRegistry,
    keys: KeyDirectory,
    *,
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
) -> Store:
    """Routes and keys from `database_url`, and the write-backs that go there."""
    cache = settings.key_cache
    consumers = ConsumerDirectory(
        capacity=cache.cache_size,
        negative_ttl=cache.negative_ttl_seconds,
        lookup_budget_per_second=cache.lookup_budget_per_second,
        box=SecretBox.from_setting(settings.secrets_key),
    )
    source = PostgresSource(
        settings.database,
        registry,
        keys,
        consumers=consumers,
        heartbeat_seconds=heartbeat_seconds,
    )
    # The one wiring made after construction, because it is circular: the source writes into
    # the directories (full reloads, NOTIFY), and they look their misses up through the
    # source's pool. The directories are made first (empty); this closes the loop.
    keys.loader = source
    consumers.loader = source.consumer_loader
    log = settings.request_log
    return Store(
        source=source,
        consumers=consumers,
        usage=UsageRecorder(source.write_usage, interval=settings.usage_flush_seconds),
        consumer_usage=UsageRecorder(
            source.write_consumer_usage, interval=settings.usage_flush_seconds
        ),
        request_log=RequestLog(
            source.write_request_logs,
            queue_size=log.queue_size,
            queue_bytes=log.queue_bytes,
            flush_seconds=log.flush_seconds,
            batch_rows=log.batch_rows,
        )
        if log.enabled
        else None,
        pruner=LogPruner(source.execute, retention_days=settings.log_retention_days)
        if settings.log_retention_days > 0
        else None,
        dependencies=(("postgres", source.connection_state),),
    )


def store_for(settings: Settings, registry: RouteRegistry, keys: KeyDirectory) -> Store:
    """Postgres when `database_url` is set, else the embedded manifest file."""
    factory = postgres_store if settings.database.url else embedded_store
    return factory(settings, registry, keys)
