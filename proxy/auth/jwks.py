"""JwksCache: the signing keys of a JWKS endpoint, kept in memory and chosen by `kid`.

Strategy: keys live in a dict by kid, so a known kid is found without I/O or awaiting
(`cached_key`, the verifier's hot path). An unknown kid is what a key rotation looks like, so it
triggers a refetch, but at most one per `min_refresh_seconds` (a stream of tokens with made-up
kids must not turn the gateway into a load generator against the identity provider), and
concurrent callers share the one fetch in flight (single-flight). A set older than
`max_age_seconds` is refetched in the background while the old one keeps serving, so a key
removed from the endpoint (revoked) stops verifying within that time.

Invariants: a failed fetch (network, status, JSON, no usable key) never empties the cache; the
previous keys keep serving and a warning is logged (no token content is ever logged). Only
RS256 and ES256 signature keys are kept: a symmetric (`oct`) key published in a JWKS is never an
HMAC secret here, and keys PyJWT cannot parse are skipped one by one, not the whole set.
PyJWKClient is not used: it fetches with blocking urllib on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from proxy.errors import Unauthorized
from proxy.redact import mask_url

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_AGE_SECONDS = 300.0
MAX_JWKS_BYTES = 1_048_576  # a JWKS is a few KiB; anything near this is not one
# The public-key algorithms accepted, from a PEM or a JWKS (jwt.py too); HS256 only ever with
# jwt_secret, so no token can pick a public key as its HMAC secret.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})
MIN_RSA_BITS = 2048  # below this PyJWT would refuse (or warn) on every verify


TOKEN_REFUSED = "Invalid or expired token"  # the only text a client sees, whatever the reason


def refused(reason: str) -> Unauthorized:
    """The 401 for a refused bearer token; `reason` goes to logs and metrics, not the client."""
    return Unauthorized(TOKEN_REFUSED, reason=reason)


class JwksCache:
    """The keys of one JWKS URL; `key_for(kid)` returns a PyJWK or raises Unauthorized."""

    def __init__(
        self,
        url: str,
        *,
        session_factory: Callable[[], aiohttp.ClientSession],
        min_refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = DEFAULT_TIMEOUT,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    ) -> None:
        self.url = url
        self._session_factory = session_factory
        self._min_refresh = min_refresh_seconds
        self._max_age = max(max_age_seconds, min_refresh_seconds)
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._by_kid: Mapping[str, pyjwt.PyJWK] = {}
        self._only: pyjwt.PyJWK | None = None  # the key a kid-less token may use
        self._count = 0
        self._last_attempt: float | None = None  # rate limit counts failed fetches too
        self._last_success: float | None = None
        self._last_ok = False
        # next background revalidation: max_age after a success, min_refresh after a failure
        self._revalidate_at = math.inf
        self._inflight: asyncio.Task[bool] | None = None
        self.fetches = 0  # attempts, for tests and metrics

    def __repr__(self) -> str:
        if self._last_success is None:
            age = "never"
        else:
            age = f"{self._clock() - self._last_success:.1f}s ago"
        state = "ok" if self._last_ok else "failing" if self._last_attempt is not None else "new"
        return (
            f"<JwksCache url={mask_url(self.url)!r} keys={self._count} fetched={age} state={state}>"
        )

    def cached_key(self, kid: str | None) -> pyjwt.PyJWK | None:
        """The key for `kid` if already known; never awaits (the verifier's hot path)."""
        key = self._by_kid.get(kid) if kid is not None else self._only
        if key is not None and self._clock() >= self._revalidate_at:
            self._start_fetch()  # stale: revalidate in the background, keep serving
        return key

    async def key_for(self, kid: str | None) -> pyjwt.PyJWK:
        """The key for `kid`, refetching the set (rate-limited, shared) when it is unknown."""
        key = self.cached_key(kid)
        if key is not None:
            return key
        if kid is None and self._count > 1:
            raise refused("unknown_kid")  # which of several keys: the token must say
        task = self._inflight
        if task is None or task.done():
            last = self._last_attempt
            if last is not None and self._clock() - last < self._min_refresh:
                raise self._miss()
            task = self._start_fetch()
        # shield: a caller that gives up (client gone) must not cancel the fetch others await
        await asyncio.shield(task)
        key = self._by_kid.get(kid) if kid is not None else self._only
        if key is None:
            raise self._miss()
        return key

    async def prefetch(self) -> bool:
        """Fetch now, sharing a fetch in flight; True when it succeeded. Never raises."""
        return await asyncio.shield(self._start_fetch())

    async def stop(self) -> None:
        """Cancel a fetch in flight (at shutdown)."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _miss(self) -> Unauthorized:
        # After a failed fetch we cannot tell a rotated key from a bad kid: say which.
        return refused("unknown_kid" if self._last_ok else "jwks_unavailable")

    def _start_fetch(self) -> asyncio.Task[bool]:
        task = self._inflight
        if task is None or task.done():
            self._last_attempt = self._clock()
            self.fetches += 1
            task = asyncio.get_running_loop().create_task(self._refresh())
            self._inflight = task
        return task

    async def _refresh(self) -> bool:
        try:
            keys = await self._fetch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure keeps the last good keys
            self._last_ok = False
            self._revalidate_at = self._clock() + self._min_refresh
            log.warning(
                "JWKS fetch from %s failed: %s; keeping %d cached keys",
                mask_url(self.url),
                _describe(exc),
                self._count,
            )
            return False
        self._by_kid = {kid: key for kid, key in reversed(keys) if kid is not None}
        self._only = keys[0][1] if len(keys) == 1 else None
        self._count = len(keys)
        self._last_success = self._clock()
        self._last_ok = True
        self._revalidate_at = self._last_success + self._max_age
        return True

    async def _fetch(self) -> list[tuple[str | None, pyjwt.PyJWK]]:
        session = self._session_factory()
        headers = {"Accept": "application/json"}
        async with session.get(self.url, headers=headers, timeout=self._timeout) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(65_536):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"body over {MAX_JWKS_BYTES} bytes")
        return parse_jwks(json.loads(body))


def parse_jwks(document: Any) -> list[tuple[str | None, pyjwt.PyJWK]]:
    """(kid, key) for each usable signature key of a JWKS document; ValueError if none."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set (no 'keys' list)")
    # A JWK meant for encryption, or for an algorithm we do not accept, is left out before
    # PyJWT sees it; PyJWKSet itself skips the keys it cannot parse.
    candidates = [
        entry
        for entry in document["keys"]
        if isinstance(entry, dict) and entry.get("use", "sig") == "sig"
    ]
    try:
        jwk_set = pyjwt.PyJWKSet.from_dict({"keys": candidates})
    except pyjwt.PyJWTError as exc:
        raise ValueError(str(exc)) from None
    keys = [
        (key.key_id, key)
        for key in jwk_set
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS and _usable(key)
    ]
    skipped = len(document["keys"]) - len(keys)
    if not keys:
        raise ValueError(f"no usable RS256/ES256 key ({skipped} skipped)")
    if skipped:
        log.warning("JWKS: skipped %d keys that are not RS256/ES256 signature keys", skipped)
    return keys


def _usable(key: pyjwt.PyJWK) -> bool:
    # Public keys only (a JWK with private parameters parses to a private key), and RSA keys
    # long enough that PyJWT's minimum-length check can never fire on the hot path.
    material = key.key
    if isinstance(material, rsa.RSAPublicKey):
        return material.key_size >= MIN_RSA_BITS
    return isinstance(material, ec.EllipticCurvePublicKey)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:200]
