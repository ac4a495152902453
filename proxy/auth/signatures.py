"""Signed requests of API consumers: HTTP Message Signatures (RFC 9421), `hmac-sha256`.

Strategy: the signature base, the Signature-Input / Signature dictionaries and Content-Digest
(RFC 9530) are the `http-message-signatures` library's; it reads a request through a small view
(method, absolute URL, header lines) that the gateway builds from aiohttp's parsed request, so
nothing is re-parsed or copied but the body. What is policy is decided here:
- exactly one signature, `keyid` = the consumer's id, the consumer's own secret (decrypted once
  when the consumer was compiled, proxy/auth/consumers.py);
- it covers at least `@method` and `@target-uri`, and `content-digest` when there is a body
  (the body is then read, bounded, and checked against it; the caller forwards those bytes);
- `created` (required) within +-`window` seconds of the injected clock, and a `nonce`
  (required) never seen in that window: `SET NX` with the window as TTL, in Redis when the
  gateway has it (so every replica shares it), else in this process.
Every failure is the same 401 (reason in the log and metrics only), like every other 401.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web
from http_message_signatures import (
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from multidict import CIMultiDictProxy
from redis.exceptions import RedisError

from proxy.errors import ServiceUnavailable, Unauthorized
from proxy.observability import metrics

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from proxy.auth.consumers import Consumer

log = logging.getLogger("modgate.auth")

DEFAULT_WINDOW_SECONDS: Final = 300
MAX_NONCE_LENGTH: Final = 128
REQUIRED_COMPONENTS: Final = ("@method", "@target-uri")
BODY_COMPONENTS: Final = (*REQUIRED_COMPONENTS, "content-digest")


class NonceStore(Protocol):
    async def first_use(self, consumer_id: str, nonce: str) -> bool:
        """True the first time this consumer presents `nonce` within the window."""


def nonce_key(consumer_id: str, nonce: str) -> str:
    """The Redis key of a used nonce: `mg:{<consumer id>}:nonce:<nonce>`, in the limiter's
    key space (mg:{...}); the hash tag keeps a consumer's keys in one Cluster slot."""
    return f"mg:{{{consumer_id}}}:nonce:{nonce}"


class RedisNonces:
    """Nonces shared by every replica: one `SET key 1 NX EX 2*window` per signed request (a
    signature stays valid until `created + window`, and `created` may be up to `window` ahead).
    Redis failing is a 503: a replay could not be ruled out, so the request is not served."""

    __slots__ = ("redis", "timeout", "window")

    def __init__(self, redis: Redis, *, window: int, timeout: float) -> None:
        self.redis = redis
        self.window = window
        self.timeout = timeout

    async def first_use(self, consumer_id: str, nonce: str) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                stored = await self.redis.set(
                    nonce_key(consumer_id, nonce), b"1", nx=True, ex=2 * self.window
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise ServiceUnavailable("Signed requests cannot be verified right now") from exc
        return bool(stored)


class MemoryNonces:
    """Nonces of this process only (no Redis): enough for one replica. Bounded: expired
    entries go first; when the store is full of live ones the request is refused (503), never
    a live nonce forgotten (a consumer could otherwise flush another's and replay it)."""

    __slots__ = ("_clock", "_seen", "capacity", "window")

    def __init__(
        self, *, window: int, capacity: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.window = window
        self.capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def first_use(self, consumer_id: str, nonce: str) -> bool:
        now = self._clock()
        seen = self._seen
        while seen and next(iter(seen.values())) <= now:
            seen.popitem(last=False)
        key = (consumer_id, nonce)
        if key in seen:
            return False
        if len(seen) >= self.capacity:
            raise ServiceUnavailable("Signed requests cannot be verified right now")
        seen[key] = now + 2 * self.window
        return True


class _RequestView:
    """What the library reads of a request: method, absolute URL, header lines."""

    __slots__ = ("headers", "method", "url")

    def __init__(self, method: str, url: str, headers: CIMultiDictProxy[str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


class _OneKey(HTTPSignatureKeyResolver):
    """The consumer's secret for its own id; no key for any other keyid."""

    def __init__(self, key_id: str, secret: bytes) -> None:
        self.key_id = key_id
        self.secret = secret

    def resolve_public_key(self, key_id: str) -> bytes | None:
        return self.secret if key_id == self.key_id else None


class _Verifier(HTTPMessageVerifier):
    """The library's verifier with `created` checked against the injected clock, +-window."""

    def __init__(self, key: _OneKey, now: float, window: int) -> None:
        super().__init__(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=key)
        self.now = now
        self.window = window

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        created = sig_input.params.get("created")
        if type(created) is not int:
            raise InvalidSignature('Signature is missing a required "created" parameter')
        if abs(self.now - created) > self.window:
            raise InvalidSignature('Signature "created" is outside the allowed window')
        expires = sig_input.params.get("expires")
        if expires is not None and (type(expires) is not int or expires < self.now):
            raise InvalidSignature('Signature "expires" has passed')


def has_signature(headers: CIMultiDictProxy[str]) -> bool:
    """Whether a request carries a signature (then it is verified, whoever sent it)."""
    return "Signature-Input" in headers or "Signature" in headers


class SignatureVerifier:
    """Verifies one consumer's signed request; see the module's strategy."""

    __slots__ = ("_clock", "nonces", "window")

    def __init__(
        self,
        nonces: NonceStore | None = None,
        *,
        window: int = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self._clock = clock
        self.nonces = nonces or MemoryNonces(window=window, clock=clock)

    async def verify(
        self,
        request: web.BaseRequest,
        consumer: Consumer,
        *,
        scheme: str,
        read_body: Callable[[], Awaitable[bytes]],
    ) -> bytes | None:
        """Check `request`'s signature for `consumer`; the body `read_body` read (None: the
        request has none), which the caller must send on instead of the request's stream.
        `scheme`: the one the client used (behind a TLS proxy, not the gateway's own)."""
        secret = consumer.secret
        if secret is None:
            raise _unauthorized("no_signing_secret")
        if not has_signature(request.headers):
            raise _unauthorized("signature_required")
        body = await read_body() if request.body_exists else None
        consumer_id = consumer.record.id
        view = _RequestView(
            request.method, f"{scheme}://{request.host}{request.raw_path}", request.headers
        )
        verifier = _Verifier(_OneKey(consumer_id, secret), self._clock(), self.window)
        try:
            [result] = verifier.verify(
                view,
                max_age=None,
                require_components=BODY_COMPONENTS if body else REQUIRED_COMPONENTS,
                body=body if body is not None else b"",
            )
        except (HTTPMessageSignaturesException, ValueError) as exc:
            raise _unauthorized("bad_signature", str(exc)) from None
        nonce = result.nonce
        if not isinstance(nonce, str) or not nonce or len(nonce) > MAX_NONCE_LENGTH:
            raise _unauthorized("bad_signature", 'a "nonce" of 1 to 128 characters is required')
        if not await self.nonces.first_use(consumer_id, nonce):
            raise _unauthorized("replayed_nonce")
        return body


_FAILURES = metrics.BoundLabels(metrics.AUTH_FAILURES)  # the authenticator's, by reason


def _unauthorized(reason: str, detail: str = "") -> Unauthorized:
    _FAILURES(reason).inc()
    if detail and log.isEnabledFor(logging.INFO):
        log.info("signed request refused (%s): %s", reason, detail)
    return Unauthorized(reason=reason)
