"""One gateway process's state: settings, route registry, key directory, the store feeding
them, the authenticator, and the upstream session."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import aiohttp

from proxy.auth.authenticator import Authenticator
from proxy.auth.client_address import ClientAddressResolver
from proxy.auth.cors import CorsPolicy
from proxy.auth.key_directory import KeyDirectory
from proxy.auth.usage import UsageRecorder
from proxy.executor.client import ExecutorClient
from proxy.observability.access_log import AccessLog
from proxy.observability.observer import RequestObserver
from proxy.observability.request_log import RequestLog
from proxy.ratelimit.breaker import CircuitBreaker
from proxy.ratelimit.limiter import RateLimiter, create_redis_client
from proxy.ratelimit.local_limiter import LocalLimiter
from proxy.ratelimit.redis_limiter import RedisLimiter
from proxy.routing.registry import RouteRegistry
from proxy.settings import Settings
from proxy.store.file_source import FileSource
from proxy.store.logs import LogPruner, write_logs
from proxy.store.pg_source import PostgresSource
from proxy.store.source import Source
from proxy.upstream.client import create_executor_pool, create_pool, create_session
from proxy.upstream.pool import UpstreamPool

# The request log and key usage get at least this long to be written at stop, even when the
# drain used the whole shutdown grace (the chart's terminationGracePeriodSeconds has room).
FLUSH_FLOOR_SECONDS: Final = 1.0


def source_for(settings: Settings, registry: RouteRegistry, keys: KeyDirectory) -> Source:
    """Postgres when `database_url` is set, else the embedded manifest file."""
    if settings.database_url:
        return PostgresSource(
            settings.database_url,
            registry,
            keys,
            timeout=settings.database_timeout,
            pool_size=settings.database_pool_size,
            reconnect_max_seconds=settings.database_reconnect_max_seconds,
        )
    return FileSource(
        settings.routes_file, registry, keys, poll_seconds=settings.routes_poll_seconds
    )


def key_directory_for(settings: Settings) -> KeyDirectory:
    return KeyDirectory(
        capacity=settings.key_cache_size,
        negative_ttl=settings.key_negative_ttl_seconds,
        lookup_budget_per_second=settings.key_lookup_budget_per_second,
    )


class Gateway:
    """Owns what lives as long as the process: opened by `start`, closed by `stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: RouteRegistry | None = None,
        keys: KeyDirectory | None = None,
        source: Source | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or RouteRegistry()
        self.keys = keys or key_directory_for(settings)
        self.source = source or source_for(settings, self.registry, self.keys)
        self.usage: UsageRecorder | None = None
        if isinstance(self.source, PostgresSource):
            self.usage = UsageRecorder(
                self.source.write_usage, interval=settings.usage_flush_seconds
            )
        self.cors = CorsPolicy(
            settings.cors_origins,
            max_age=settings.cors_max_age_seconds,
            allow_credentials=settings.cors_allow_credentials,
        )
        self.addresses = ClientAddressResolver(settings.trusted_proxies)
        self.authenticator: Authenticator | None = None
        self.limiter: RateLimiter | None = None
        self.executor: ExecutorClient | None = None
        self.access_log = AccessLog() if settings.access_log else None
        self.request_log: RequestLog | None = None
        self.pruner: LogPruner | None = None
        if isinstance(self.source, PostgresSource):
            execute = self.source.execute
            if settings.request_log_enabled:
                self.request_log = RequestLog(
                    lambda batch: execute(lambda conn: write_logs(conn, batch.rows, batch.attempt)),
                    queue_size=settings.request_log_queue_size,
                    queue_bytes=settings.request_log_queue_bytes,
                    flush_seconds=settings.request_log_flush_seconds,
                    batch_rows=settings.request_log_batch_rows,
                )
            if settings.log_retention_days > 0:
                self.pruner = LogPruner(execute, retention_days=settings.log_retention_days)
        self.observer = RequestObserver(access_log=self.access_log, request_log=self.request_log)
        self._redis: Any = None
        self.session: aiohttp.ClientSession | None = None
        self.pool: UpstreamPool | None = None
        self.executor_pool: UpstreamPool | None = None
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why /readyz is 503, or None when ready. Postgres being down is not a reason: the
        last good tables keep serving; Redis down is one only under the `closed` policy,
        where every request would fail."""
        if self.draining:
            return "draining"
        if not self.registry.loaded:
            return "route tables not loaded yet"
        limiter = self.limiter
        if limiter is not None and limiter.redis is not None and not limiter.redis.started:
            return "Redis connections not opened yet"
        if limiter is not None and limiter.policy == "closed" and limiter.breaker.open:
            return "Redis is failing and redis_failure_policy is closed"
        return None

    def dependencies(self) -> dict[str, str]:
        """Each dependency's state, for /readyz."""
        state: dict[str, str] = {}
        if isinstance(self.source, PostgresSource):
            state["postgres"] = "connected" if self.source.connected else "disconnected"
        limiter = self.limiter
        if limiter is not None and limiter.redis is not None:
            state["redis"] = f"failing ({limiter.policy} policy)" if limiter.breaker.open else "ok"
        return state

    async def start(self) -> None:
        from proxy.auth.jwt import JwtVerifier

        self.session = create_session(self.settings)
        self.pool = create_pool(self.settings)
        session = self.session
        jwt = JwtVerifier.from_settings(self.settings, lambda: session)
        self.authenticator = Authenticator(self.keys, jwt, usage=self.usage)
        if self.settings.executor_url:
            self.executor_pool = create_executor_pool(self.settings)
            self.executor = ExecutorClient(
                self.executor_pool,
                self.settings.executor_url,
                token=self.settings.executor_token,
                max_response_bytes=self.settings.executor_max_response_bytes,
            )
        self.limiter = self._rate_limiter()
        try:
            if self.limiter is not None:  # Redis connected and its script loaded before ready
                await self.limiter.start()
            await self.source.start()
            if jwt is not None:
                await jwt.start()
            if self.usage is not None:
                await self.usage.start()
            if self.access_log is not None:
                await self.access_log.start()
            if self.request_log is not None:
                await self.request_log.start()
            if self.pruner is not None:
                await self.pruner.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self, deadline: float | None = None) -> None:
        """Close everything; the request log and key usage are written first, retried until
        `deadline` (event-loop time; the worker passes SIGTERM + shutdown_grace_seconds; None:
        that long from now), and given at least FLUSH_FLOOR_SECONDS whatever the drain took."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.settings.shutdown_grace_seconds
        deadline = max(deadline, loop.time() + FLUSH_FLOOR_SECONDS)
        # Loggers first: their last rows and counts are written while the pool is still open.
        if self.access_log is not None:
            await self.access_log.stop()
        if self.pruner is not None:
            await self.pruner.stop()
        flushes = [
            logger.stop(deadline) for logger in (self.request_log, self.usage) if logger is not None
        ]
        await asyncio.gather(*flushes)
        if self.authenticator is not None and self.authenticator.jwt is not None:
            await self.authenticator.jwt.stop()
        await self.source.stop()
        if self.limiter is not None:
            await self.limiter.close()
        if self._redis is not None:
            await self._redis.aclose()
        if self.session is not None:
            await self.session.close()
        if self.pool is not None:
            await self.pool.close()
        if self.executor_pool is not None:
            await self.executor_pool.close()

    def _rate_limiter(self) -> RateLimiter | None:
        settings = self.settings
        if not settings.rate_limit_enabled:
            return None
        # Every worker process keeps its own buckets: the fallback's share is per process.
        local = LocalLimiter(
            capacity=settings.local_buckets_max,
            replicas=settings.rate_limit_replicas * settings.workers,
        )
        redis = None
        if settings.redis_url:
            self._redis = create_redis_client(
                settings.redis_url, timeout=settings.redis_timeout_seconds
            )
            redis = RedisLimiter(self._redis, timeout=settings.redis_timeout_seconds, mirror=local)
        return RateLimiter(
            local=local,
            redis=redis,
            breaker=CircuitBreaker(
                failures=settings.redis_circuit_failures,
                window=settings.redis_circuit_window_seconds,
                cooldown=settings.redis_circuit_cooldown_seconds,
                policy=settings.redis_failure_policy,
            ),
            policy=settings.redis_failure_policy,
            default_per_minute=settings.default_rate_limit_per_minute,
            default_per_day=settings.default_rate_limit_per_day,
        )

    def __repr__(self) -> str:
        state = "draining" if self.draining else ("ready" if self.ready else "loading")
        return f"<Gateway {self.source.name} {state} {self.registry!r} {self.keys!r}>"
