"""The rate-limit step of the pipeline: which limits apply to whom, and who decides.

Strategy:
- Limits: per minute, the route's `rate_limit_per_minute`, else the API key's (or API
  consumer's), else `default_rate_limit_per_minute`; per day, the key's (consumer's)
  `rate_limit_per_day`, else `default_rate_limit_per_day` (0 = none). The daily quota resets
  at 00:00 UTC.
- Caller: the API key, else the API consumer, else the JWT's user, else the client address;
  one bucket per caller and module.
- Decider: Redis when configured, one EVALSHA on a connection opened before the gateway turned
  ready, answered within `redis_timeout_seconds` (the budget: it measures Redis's reply, never
  connection setup; its default comes from measurements, see docs/rate-limits.md). A call that fails
  or runs past its budget is decided by the failure policy at once: `local` (this process's
  share of the bucket Redis last reported, see local_limiter.py), `open` (admit, no headers),
  `closed` (503).
- One slow call, before the circuit opens: the failure policy decides that request; under
  `local` it spends this process's share of the mirrored bucket, never a fresh bucket, and the
  admission is charged to Redis when it answers again (so a call Redis did run counts twice:
  conservative). Bound: between two Redis replies for a bucket a process admits at most its
  share of what the last one left, plus its share of the refill; with `rate_limit_replicas` x
  `workers` equal to the gateway processes, the fleet admits at most one limit more than one
  gateway would during a failure (docs/rate-limits.md: "The bound").
- Circuit breaker: once Redis is really failing (`redis_circuit_failures` failures in a row
  over at least `redis_circuit_window_seconds`, or no connection could be opened) no request
  waits on it; every `redis_circuit_cooldown_seconds` one call probes it.
- With no Redis the in-process buckets are the decider.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from proxy.auth.client_address import IPAddress
from proxy.auth.key_fields import DEFAULT_RATE_LIMIT_PER_MINUTE
from proxy.auth.principal import Principal
from proxy.errors import ServiceUnavailable
from proxy.observability import metrics
from proxy.ratelimit.breaker import CircuitBreaker
from proxy.ratelimit.decision import LIMITED_QUOTA, Decision
from proxy.ratelimit.local_limiter import LocalLimiter
from proxy.ratelimit.redis_limiter import RedisLimiter
from proxy.routing.model import RouteSpec

if TYPE_CHECKING:
    from redis.asyncio import Redis

_DECISIONS = metrics.BoundLabels(metrics.RATELIMIT_DECISIONS)  # by decision, backend
_DECISION_NAMES = ("allowed", "limited", "quota")  # by Decision.limited_by
for _backend in ("redis", "local"):
    for _name in _DECISION_NAMES:
        _DECISIONS(_name, _backend)  # the series exist from the start, at 0
_REDIS_ERRORS = metrics.BoundLabels(metrics.REDIS_ERRORS)  # by kind
_MAX_CALLER_LENGTH = 128


class RateLimiter:
    __slots__ = ("breaker", "default_per_day", "default_per_minute", "local", "policy", "redis")

    def __init__(
        self,
        *,
        local: LocalLimiter,
        redis: RedisLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        policy: str = "local",
        default_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE,
        default_per_day: int = 0,
    ) -> None:
        self.local = local
        self.redis = redis
        self.breaker = breaker or CircuitBreaker(failures=3, cooldown=1.0, policy=policy)
        self.policy = policy
        self.default_per_minute = default_per_minute
        self.default_per_day = default_per_day

    async def start(self) -> None:
        """Open Redis's connections (before the gateway turns ready); unreachable opens the
        circuit at once, and they are opened in the background."""
        if self.redis is not None and not await self.redis.start():
            self.breaker.trip("cannot connect")

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    async def check(
        self,
        principal: Principal,
        route: RouteSpec,
        module_id: str,
        client_ip: IPAddress | None,
    ) -> Decision | None:
        """The decision for this request, or None when nothing is enforced (policy `open`)."""
        credential = principal.api_key or principal.consumer
        key = credential.record if credential is not None else None
        per_minute = (
            route.rate_limit_per_minute
            or (
                key.rate_limit_per_minute if key is not None and key.rate_limit_per_minute else None
            )
            or self.default_per_minute
        )
        per_day = self.default_per_day
        if key is not None and key.rate_limit_per_day is not None:
            per_day = key.rate_limit_per_day
        bucket = f"{module_id}:{caller_of(principal, client_ip)}"
        return await self.hit(bucket, per_minute, per_day)

    async def hit(self, bucket: str, per_minute: int, per_day: int) -> Decision | None:
        if self.redis is None:
            return self._count(self.local.hit_now(bucket, per_minute, per_day), "local")
        if self.breaker.allow():
            try:
                decision = await self.redis.hit(bucket, per_minute, per_day)  # within its budget
            except TimeoutError:
                _REDIS_ERRORS("timeout").inc()
                self.breaker.failure("timeout")
            except (RedisError, OSError) as exc:
                _REDIS_ERRORS("error").inc()
                self.breaker.failure(type(exc).__name__)
            except asyncio.CancelledError:
                self.breaker.abandon()
                raise
            else:
                self.breaker.success()
                return self._count(decision, "redis")
        return self._fallback(bucket, per_minute, per_day)

    def _fallback(self, bucket: str, per_minute: int, per_day: int) -> Decision | None:
        if self.policy == "open":
            _DECISIONS("allowed", "open").inc()
            return None
        if self.policy == "closed":
            raise ServiceUnavailable("Rate limiting is unavailable")
        # This process's share of the bucket Redis last reported, so the fleet stays near the
        # limit without Redis; what it admits is charged to Redis when it answers again.
        return self._count(self.local.fallback(bucket, per_minute, per_day), "local")

    @staticmethod
    def _count(decision: Decision, backend: str) -> Decision:
        _DECISIONS(_DECISION_NAMES[decision.limited_by], backend).inc()
        return decision


def caller_of(principal: Principal, client_ip: IPAddress | None) -> str:
    if principal.api_key is not None:
        return f"k:{principal.api_key.record.id}"
    if principal.consumer is not None:
        return f"c:{principal.consumer.record.id}"
    if principal.user_id:
        caller = f"u:{principal.user_id}"
        if len(caller) > _MAX_CALLER_LENGTH:  # a JWT `sub` can be long; bucket keys stay short
            caller = "u#" + hashlib.sha256(principal.user_id.encode()).hexdigest()[:32]
        return caller
    return f"ip:{client_ip}"


def is_quota(decision: Decision) -> bool:
    return decision.limited_by == LIMITED_QUOTA


def create_redis_client(url: str, *, timeout: float) -> Redis:
    """A redis.asyncio client for the limiter (hiredis parses replies when installed)."""
    import redis.asyncio as redis

    # Socket timeouts well above the per-call budget: the budget is enforced around each call;
    # these only bound a connection that would otherwise hang forever.
    return redis.from_url(
        url,
        socket_timeout=max(1.0, timeout * 10),
        socket_connect_timeout=max(1.0, timeout * 10),
        max_connections=512,
        decode_responses=False,
    )
