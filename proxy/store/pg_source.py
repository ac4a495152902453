"""Route tables and API keys from Postgres, kept current by LISTEN/NOTIFY.

This is the gateway's only door to Postgres: route loads, the key and consumer indexes, their
lookups for the KeyDirectory and the ConsumerDirectory (the mode factory, proxy/server/modes.py,
makes it and its `consumer_loader` the directories' loaders), batched usage writes and request
log rows all go through its pool.

Strategy:
- A dedicated connection LISTENs on `modgate_invalidate`; triggers send `routes:<module_id>`,
  `key:<key_hash>`, `consumer:<key_hash>` (and `all` on TRUNCATE), so any writer invalidates.
- A notification queues its module or key; one reload task drains the queue, loading and
  compiling only the queued modules and re-reading only the queued keys, one batch at a time
  (so two reloads never race to install).
- LISTEN hears nothing while disconnected, so every (re)connect LISTENs first and then does a
  full reload: whatever committed in between is picked up.
- A full reload also reloads the indexes of active key and consumer hashes and re-reads the
  cached ones.
- A heartbeat query notices a connection that died silently (no FIN); `pg_terminate_backend`
  and server restarts are noticed at once through the termination callback.
- Failure never empties a table: the registry only changes after a successful load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from proxy.auth.api_keys import ApiKeyRecord
from proxy.auth.consumer_keys import ConsumerRecord
from proxy.auth.consumers import ConsumerDirectory
from proxy.auth.key_directory import KeyDirectory
from proxy.errors import ConfigError, StoreError
from proxy.observability import metrics
from proxy.observability.request_log import LogBatch
from proxy.retry import Backoff, WriteAttempt
from proxy.routing.registry import RouteRegistry
from proxy.settings_views import DatabaseSettings
from proxy.store.consumers import (
    fetch_active_consumer,
    fetch_active_consumers,
    load_active_consumer_hashes,
    record_consumer_usage,
)
from proxy.store.keys import (
    fetch_active_key,
    fetch_active_keys,
    load_active_key_hashes,
    record_usage,
)
from proxy.store.logs import write_logs
from proxy.store.routes import load_modules
from proxy.tasks import cancel_and_wait

T = TypeVar("T")

log = logging.getLogger("modgate.store")

CHANNEL = "modgate_invalidate"
DEFAULT_HEARTBEAT_SECONDS = 5.0
LISTENER_APPLICATION_NAME = "modgate-listen"
POOL_APPLICATION_NAME = "modgate"
_STORE_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, StoreError)


class PostgresSource:
    name = "postgres"

    def __init__(
        self,
        database: DatabaseSettings,
        registry: RouteRegistry,
        keys: KeyDirectory | None = None,
        *,
        consumers: ConsumerDirectory | None = None,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if database.url is None:
            raise ConfigError("database_url: required in Postgres mode")
        self.registry = registry
        self.keys = keys
        self.consumers = consumers
        self.consumer_loader = ConsumerLoader(self)
        self._dsn = database.url
        self._timeout = database.timeout  # per query, and per connection attempt
        self._pool_size = database.pool_size
        self._heartbeat_seconds = heartbeat_seconds
        self._backoff = Backoff(maximum=database.reconnect_max_seconds, rng=rng)
        self._retry = Backoff(maximum=database.reconnect_max_seconds, rng=rng)
        self._pool: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[str] = set()
        self._pending_keys: set[str] = set()
        self._pending_consumers: set[str] = set()
        self._pending_all = False
        self._wakeup = asyncio.Event()
        self.connected = False

    async def start(self) -> None:
        # Not awaited: a gateway starts (and answers /healthz) while Postgres is still away;
        # /readyz turns 200 when the first full load lands.
        self._task = asyncio.create_task(self._run(), name="modgate-routes-postgres")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def request_reload(self) -> None:
        self._pending_all = True
        self._wakeup.set()

    async def execute(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run `work(connection)` on a pooled connection; StoreError when Postgres fails."""
        if self._pool is None:
            raise StoreError("not connected to Postgres yet")
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                return await work(conn)
        except _STORE_FAILURES as exc:
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"Postgres query failed: {str(exc) or type(exc).__name__}") from exc

    async def fetch(self, key_hash: str) -> ApiKeyRecord | None:
        """KeyLoader: the active row for this key hash."""
        return await self.execute(lambda conn: fetch_active_key(conn, key_hash))

    async def write_usage(
        self, usage: Mapping[str, tuple[int, datetime]], attempt: WriteAttempt[None] | None = None
    ) -> None:
        """UsageWriter: add a batch of key usage (`attempt`: see proxy/store/commit.py)."""
        await self.execute(lambda conn: record_usage(conn, usage, attempt))

    async def write_consumer_usage(
        self, usage: Mapping[str, tuple[int, datetime]], attempt: WriteAttempt[None] | None = None
    ) -> None:
        """UsageWriter for API consumers: total_requests and last_request_at."""
        await self.execute(lambda conn: record_consumer_usage(conn, usage, attempt))

    async def write_request_logs(self, batch: LogBatch) -> int:
        """LogWriter: one batch of request log rows (its retries carry `batch.attempt`)."""
        return await self.execute(lambda conn: write_logs(conn, batch.rows, batch.attempt))

    def connection_state(self) -> str:
        """The LISTEN connection, as /readyz reports it."""
        return "connected" if self.connected else "disconnected"

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except _STORE_FAILURES as exc:
                log.warning("postgres route store unavailable, serving last good tables: %s", exc)
            except Exception:
                # A bug must not end the loop: the tables would go stale without a sound.
                log.exception("postgres route store failed unexpectedly; reconnecting")
            finally:
                self.connected = False
                metrics.STORE_CONNECTED.set(0)
            await asyncio.sleep(self._backoff.next_delay())
            metrics.STORE_RECONNECTS.inc()

    async def _session(self) -> None:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings={"application_name": POOL_APPLICATION_NAME},
            )
        conn = await asyncpg.connect(
            self._dsn,
            timeout=self._timeout,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            self._pending.clear()
            self._pending_all = False
            await self._reload_all()
            self.connected = True
            metrics.STORE_CONNECTED.set(1)
            self._backoff.reset()
            log.info("listening for route changes on %s", CHANNEL)
            reloader = asyncio.create_task(self._reload_loop(), name="modgate-routes-reload")
            try:
                await self._heartbeat(conn, lost)
            finally:
                await cancel_and_wait(reloader)
        finally:
            conn.terminate()

    async def _heartbeat(self, conn: Any, lost: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._heartbeat_seconds)
            if lost.is_set():
                raise StoreError("LISTEN connection closed by the server")
            await conn.fetchval("SELECT 1", timeout=self._timeout)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "routes" and value:
            self._pending.add(value)
        elif kind == "key" and value:
            self._pending_keys.add(value)
        elif kind == "consumer" and value:
            self._pending_consumers.add(value)
        elif kind == "all":
            self._pending_all = True
        else:
            return
        self._wakeup.set()

    async def _reload_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            full, ids, key_hashes = self._pending_all, self._pending, self._pending_keys
            consumer_hashes = self._pending_consumers
            self._pending_all, self._pending, self._pending_keys = False, set(), set()
            self._pending_consumers = set()
            try:
                if full:
                    await self._reload_all()
                else:
                    if ids:
                        await self._reload_modules(ids)
                    if key_hashes:
                        await self._reload_keys(key_hashes)
                    if consumer_hashes:
                        await self._reload_consumers(consumer_hashes)
                self._retry.reset()
            except Exception as exc:
                metrics.ROUTE_RELOADS.labels(source=self.name, result="error").inc()
                if isinstance(exc, _STORE_FAILURES):
                    log.warning("route reload failed, last good tables kept, retrying: %s", exc)
                else:
                    log.exception("route reload failed unexpectedly, last good tables kept")
                self._pending_all = self._pending_all or full
                self._pending |= ids
                self._pending_keys |= key_hashes
                self._pending_consumers |= consumer_hashes
                await asyncio.sleep(self._retry.next_delay())
                self._wakeup.set()

    async def _reload_all(self) -> None:
        cached = self.keys.cached_hashes() if self.keys is not None else []
        consumers = self.consumers
        cached_consumers = consumers.cached_hashes() if consumers is not None else []
        async with self._pool.acquire(timeout=self._timeout) as conn:
            specs = await load_modules(conn)
            hashes = await load_active_key_hashes(conn) if self.keys is not None else []
            # The keys in memory are re-read, not dropped: dropped, each would need Postgres
            # again, and a key not used between two outages would be refused in the second.
            refreshed = await fetch_active_keys(conn, cached) if cached else {}
            if consumers is not None:
                consumer_hashes = await load_active_consumer_hashes(conn)
                fresh_consumers = (
                    await fetch_active_consumers(conn, cached_consumers) if cached_consumers else {}
                )
        errors = self.registry.replace_all(specs, source=self.name)
        if self.keys is not None:
            self.keys.set_index(hashes, refreshed)
        if consumers is not None:
            consumers.set_index(consumer_hashes, fresh_consumers)
        metrics.ROUTE_RELOADS.labels(source=self.name, result="ok").inc()
        log.info(
            "loaded %d modules (%d not compiled) and an index of %d active keys from postgres",
            len(specs),
            len(errors),
            len(hashes),
        )

    async def _reload_keys(self, key_hashes: set[str]) -> None:
        assert self.keys is not None
        async with self._pool.acquire(timeout=self._timeout) as conn:
            records = {h: await fetch_active_key(conn, h) for h in key_hashes}
        for key_hash, record in records.items():
            self.keys.put(key_hash, record)
        log.debug("refreshed %d API keys", len(records))

    async def _reload_consumers(self, key_hashes: set[str]) -> None:
        assert self.consumers is not None
        async with self._pool.acquire(timeout=self._timeout) as conn:
            records = {h: await fetch_active_consumer(conn, h) for h in key_hashes}
        for key_hash, record in records.items():
            self.consumers.put(key_hash, record)
        log.debug("refreshed %d API consumers", len(records))

    async def _reload_modules(self, ids: set[str]) -> None:
        started = time.perf_counter()
        async with self._pool.acquire(timeout=self._timeout) as conn:
            specs = await load_modules(conn, ids)
        loaded = time.perf_counter()
        removed = ids - {spec.id for spec in specs}
        self.registry.update(specs, removed, source=self.name)
        metrics.ROUTE_RELOADS.labels(source=self.name, result="ok").inc()
        log.debug(
            "reloaded modules %s (load %.1f ms, compile %.1f ms)",
            ", ".join(sorted(ids)),
            (loaded - started) * 1000,
            (time.perf_counter() - loaded) * 1000,
        )


class ConsumerLoader:
    """The ConsumerDirectory's loader: the source's pool, the consumers' table."""

    __slots__ = ("_source",)

    def __init__(self, source: PostgresSource) -> None:
        self._source = source

    async def fetch(self, key_hash: str) -> ConsumerRecord | None:
        return await self._source.execute(lambda conn: fetch_active_consumer(conn, key_hash))
