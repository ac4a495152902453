"""One gateway process's state: settings, route registry, key directory, the store feeding
them (proxy/server/modes.py), the authenticator, the limiter and the upstream clients.

Strategy: everything is built when the `Gateway` is made, typed and present for good (a part
that is None does not exist in this configuration, it is not waiting for `start`). `start`
only opens what needs the network, in the order of `_lifecycle`, and registers each close on
an `AsyncExitStack`, so `stop` closes in the reverse order and the two cannot drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from proxy.auth.authenticator import Authenticator
from proxy.auth.client_address import ClientAddressResolver
from proxy.auth.cors import CorsPolicy
from proxy.auth.jwt import JwtVerifier
from proxy.auth.key_directory import KeyDirectory
from proxy.auth.signatures import DEFAULT_WINDOW_SECONDS, RedisNonces, SignatureVerifier
from proxy.executor.client import ExecutorClient, create_executor_pool
from proxy.observability.access_log import AccessLog
from proxy.observability.observer import RequestObserver
from proxy.ratelimit.breaker import CircuitBreaker
from proxy.ratelimit.limiter import RateLimiter, create_redis_client
from proxy.ratelimit.local_limiter import LocalLimiter
from proxy.ratelimit.redis_limiter import RedisLimiter
from proxy.routing.registry import RouteRegistry
from proxy.server.modes import Dependency, StoreFactory, store_for
from proxy.settings import Settings
from proxy.settings_views import KeyCacheSettings
from proxy.upstream.client import LazySession, create_pool

if TYPE_CHECKING:
    from redis.asyncio import Redis

# The request log and key usage get at least this long to be written at stop, even when the
# drain used the whole shutdown grace (the chart's terminationGracePeriodSeconds has room).
FLUSH_FLOOR_SECONDS: Final = 1.0

# What `start` opens (None: nothing to open, only to close) and what `stop` closes (None:
# closed by another part's close).
_Open = Callable[[], Awaitable[object]] | None
_Close = Callable[[], Awaitable[object]] | None


def key_directory(cache: KeyCacheSettings) -> KeyDirectory:
    return KeyDirectory(
        capacity=cache.cache_size,
        negative_ttl=cache.negative_ttl_seconds,
        lookup_budget_per_second=cache.lookup_budget_per_second,
    )


def executor_client(settings: Settings) -> ExecutorClient | None:
    """The handler pool's client, over its own connections; None without executor_url."""
    if not settings.executor_url:
        return None
    return ExecutorClient(
        create_executor_pool(settings.upstream, settings.executor_timeout_seconds),
        settings.executor_url,
        token=settings.executor_token,
        max_response_bytes=settings.executor_max_response_bytes,
    )


def rate_limiter(
    settings: Settings, client: Redis | None, *, clock: Callable[[], float] = time.monotonic
) -> RateLimiter:
    """Buckets in this process, shared through `client` (Redis) when there is one."""
    # Every worker process keeps its own buckets: the fallback's share is per process.
    local = LocalLimiter(
        capacity=settings.local_buckets_max,
        replicas=settings.rate_limit_replicas * settings.workers,
    )
    redis = settings.redis
    shared = (
        None
        if client is None
        else RedisLimiter(client, timeout=redis.timeout_seconds, mirror=local)
    )
    return RateLimiter(
        local=local,
        redis=shared,
        breaker=CircuitBreaker(
            failures=redis.circuit_failures,
            window=redis.circuit_window_seconds,
            cooldown=redis.circuit_cooldown_seconds,
            policy=redis.failure_policy,
            clock=clock,
        ),
        policy=redis.failure_policy,
        default_per_minute=settings.default_rate_limit_per_minute,
        default_per_day=settings.default_rate_limit_per_day,
    )


class Gateway:
    """Owns what lives as long as the process: built here, opened by `start`, closed by `stop`.
    `store` picks the mode's parts (default: by `database_url`)."""

    def __init__(self, settings: Settings, *, store: StoreFactory = store_for) -> None:
        self.settings = settings
        self.sidecar_module = settings.sidecar_module if settings.mode == "sidecar" else None
        self.registry = RouteRegistry(sidecar_module=self.sidecar_module)
        self.keys = key_directory(settings.key_cache)
        parts = store(settings, self.registry, self.keys)
        self.source = parts.source
        self.consumers = parts.consumers
        self.usage = parts.usage
        self.consumer_usage = parts.consumer_usage
        self.request_log = parts.request_log
        self.pruner = parts.pruner
        self.cors = CorsPolicy(
            settings.cors_origins,
            max_age=settings.cors_max_age_seconds,
            allow_credentials=settings.cors_allow_credentials,
        )
        self.addresses = ClientAddressResolver(settings.trusted_proxies)
        self.pool = create_pool(settings.upstream)
        self.http = LazySession(settings.upstream)  # the gateway's own calls: JWKS
        self.jwt = JwtVerifier.from_settings(settings, self.http)
        self.executor = executor_client(settings)
        self.redis: Redis | None = None
        self.limiter: RateLimiter | None = None
        redis = settings.redis
        if redis.url:  # the limiter's, and signed requests' nonces (shared by every replica)
            self.redis = create_redis_client(redis.url, timeout=redis.timeout_seconds)
        if settings.rate_limit_enabled:
            self.limiter = rate_limiter(settings, self.redis)
        # Signed requests' nonces: in Redis when redis_url is set, even with rate limiting
        # off, so replicas share them; without it, in this process only.
        nonces = None
        if self.redis is not None:
            nonces = RedisNonces(
                self.redis, window=DEFAULT_WINDOW_SECONDS, timeout=redis.timeout_seconds
            )
        self.authenticator = Authenticator(
            self.keys,
            self.jwt,
            usage=self.usage,
            consumers=self.consumers,
            consumer_usage=self.consumer_usage,
            signatures=SignatureVerifier(nonces),
        )
        self.access_log = AccessLog() if settings.access_log else None
        self.observer = RequestObserver(access_log=self.access_log, request_log=self.request_log)
        self._dependencies: tuple[Dependency, ...] = parts.dependencies
        if self.limiter is not None and self.limiter.redis is not None:
            self._dependencies += (("redis", functools.partial(_redis_state, self.limiter)),)
        self._opened = contextlib.AsyncExitStack()
        self._started = False
        self._flush_deadline: float | None = None  # what `stop` was given, for _stop_loggers
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
        if self.registry.sidecar_module_missing:
            return f"sidecar_module '{self.sidecar_module}' is not among the loaded modules"
        limiter = self.limiter
        if limiter is not None and limiter.redis is not None and not limiter.redis.started:
            return "Redis connections not opened yet"
        if limiter is not None and limiter.policy == "closed" and limiter.breaker.open:
            return "Redis is failing and redis_failure_policy is closed"
        return None

    def dependencies(self) -> dict[str, str]:
        """Each dependency's state, for /readyz."""
        return {name: state() for name, state in self._dependencies}

    def _lifecycle(self) -> list[tuple[_Open, _Close]]:
        """What `start` opens, in order: the clients first, then what uses them. The limiter
        opens before the routes load, so Redis is connected and its script loaded by ready.
        The loggers come last, so they stop first (see `_stop_loggers`)."""
        parts: list[tuple[_Open, _Close]] = [(None, self.pool.close), (None, self.http.close)]
        if self.executor is not None:
            parts.append((None, self.executor.pool.close))
        if self.redis is not None:
            parts.append((None, self.redis.aclose))
        if self.limiter is not None:
            parts.append((self.limiter.start, self.limiter.close))
        parts.append((self.source.start, self.source.stop))
        if self.jwt is not None:
            parts.append((self.jwt.start, self.jwt.stop))
        # One close for all the loggers, registered before any of them starts; each one's stop
        # is safe before its start.
        parts.append((None, self._stop_loggers))
        loggers = (self.usage, self.consumer_usage, self.access_log, self.request_log, self.pruner)
        for logger in loggers:
            if logger is not None:
                parts.append((logger.start, None))
        return parts

    async def start(self) -> None:
        """Open everything, in the order of `_lifecycle`; once per gateway (what `stop` closed
        does not open again)."""
        if self._started:
            raise RuntimeError(f"{self!r} was already started: a Gateway starts once")
        self._started = True
        try:
            for open_, close in self._lifecycle():
                # Registered before opening: a part that fails half-way is closed too.
                if close is not None:
                    self._opened.push_async_callback(close)
                if open_ is not None:
                    await open_()
        except BaseException:
            await self.stop()
            raise

    async def stop(self, deadline: float | None = None) -> None:
        """Close everything `start` opened, in the reverse order: the loggers first, the request
        log and key usage written until `deadline` (event-loop time; the worker passes SIGTERM
        + shutdown_grace_seconds; None: that long from now). Without `start`, or a second
        time, nothing is left to close.

        Every close runs even when one raises (the AsyncExitStack goes on to the next); the
        error then propagates from here, after the last close: a close that raises is a bug
        (the loggers handle Postgres failing themselves), and it should not pass unnoticed."""
        self._flush_deadline = deadline
        await self._opened.aclose()

    async def _stop_loggers(self) -> None:
        """Invariant: the loggers stop before anything `start` opened closes (they are pushed
        last on the stack), so their last rows and counts are written while the Postgres pool
        (the source) is still open. The access log and the pruner stop first; then the request
        log and key and consumer usage are flushed together, until the deadline given to `stop`
        and for at least FLUSH_FLOOR_SECONDS whatever the drain took. Each stops even when
        another raises; the first error is raised again once all are done."""
        loop = asyncio.get_running_loop()
        deadline = self._flush_deadline
        if deadline is None:
            deadline = loop.time() + self.settings.shutdown_grace_seconds
        deadline = max(deadline, loop.time() + FLUSH_FLOOR_SECONDS)
        first = [logger.stop() for logger in (self.access_log, self.pruner) if logger is not None]
        outcomes = await asyncio.gather(*first, return_exceptions=True)
        flushes = [
            logger.stop(deadline)
            for logger in (self.request_log, self.usage, self.consumer_usage)
            if logger is not None
        ]
        outcomes += await asyncio.gather(*flushes, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def __repr__(self) -> str:
        state = "draining" if self.draining else ("ready" if self.ready else "loading")
        return f"<Gateway {self.source.name} {state} {self.registry!r} {self.keys!r}>"


def _redis_state(limiter: RateLimiter) -> str:
    return f"failing ({limiter.policy} policy)" if limiter.breaker.open else "ok"
