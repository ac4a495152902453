"""JwtVerifier: Bearer JWTs checked against a shared secret (HS256) or public keys (RS256/ES256).

Strategy: the key is chosen from the header's `alg` *before* anything is verified, and PyJWT
gets exactly that one algorithm. HS256 is verified only with `jwt_secret`; RS256/ES256 only with
the PEM key (whose type fixes its algorithm) or a JWKS key (chosen by `kid`, algorithm bound by
PyJWK). So `alg: none`, unconfigured algorithms and the classic confusion (HS256 "signed" with
the public key's PEM as HMAC secret) fail with `alg_not_allowed` before any signature math.

Claims: PyJWT checks the signature, `iss`, `aud` and that `exp` exists; exp/nbf/iat are checked
here against the injected clock (PyJWT reads the wall clock), with `leeway`. Scopes are what the
token carries (`scope`, `scp`, `scopes`) plus `jwt_default_scopes`: nothing is implied (the
seed granted '*' to every JWT).

Hot path: with the key in memory, `verify` never yields to the event loop. Verified tokens are
kept in a bounded LRU (token -> identity, exp): a repeated token skips parsing and the
signature check, and its exp is compared with the clock on every hit, so it still expires on
time. Only verified tokens enter it, so garbage cannot evict good entries; the price is that a
token stays valid until exp even if its JWKS key is withdrawn meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt as pyjwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import HMACAlgorithm

from proxy.auth.jwks import ASYMMETRIC_ALGORITHMS, MIN_RSA_BITS, JwksCache, refused
from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.settings import Settings

__all__ = ["JwtIdentity", "JwtVerifier", "load_public_key_pem"]

MAX_TOKEN_BYTES = 8192  # a longer Authorization header is refused before any parsing
DEFAULT_CACHE_SIZE = 10_000
MIN_SECRET_BYTES = 32  # HS256: a shorter key makes PyJWT warn (or refuse) on every verify
_HEADER_MEMO_SIZE = 256

# PyJWT raises these exact classes; anything else (DecodeError, bad sub/jti...) is malformed.
_REASONS: dict[type[Exception], str] = {
    pyjwt.InvalidAlgorithmError: "alg_not_allowed",
    pyjwt.InvalidSignatureError: "bad_signature",
    pyjwt.InvalidIssuerError: "bad_issuer",
    pyjwt.InvalidAudienceError: "bad_audience",
    pyjwt.InvalidKeyError: "bad_key",
}
_MISSING_CLAIM_REASONS = {"exp": "missing_exp", "iss": "bad_issuer", "aud": "bad_audience"}


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """Who a verified token speaks for; shared between requests (cached), hence immutable."""

    user_id: str | None
    site_id: str | None
    scopes: frozenset[str]
    claims: Mapping[str, Any]


class JwtVerifier:
    """Verifies bearer JWTs; `await verify(token)` returns a JwtIdentity or raises Unauthorized."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key_pem: str | bytes | None = None,
        jwks: JwksCache | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        site_claim: str = "site_id",
        default_scopes: tuple[str, ...] | frozenset[str] = (),
        clock: Callable[[], float] = time.time,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._secret = _check_secret(secret) if secret is not None else None
        self._public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = None
        self._public_alg: str | None = None
        if public_key_pem is not None:
            self._public_key, self._public_alg = _load_public_key(public_key_pem)
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._site_claim = site_claim
        self._default_scopes = frozenset(default_scopes)
        self._clock = clock
        self._cache: OrderedDict[str, tuple[JwtIdentity, float]] = OrderedDict()
        self._cache_size = cache_size
        self._headers: dict[str, tuple[str, str | None]] = {}
        self._prefetch: asyncio.Task[bool] | None = None  # the start-up JWKS fetch
        self.signature_checks = 0  # PyJWT decode calls (cache misses), for tests and metrics
        # Built once: per-call option dicts would be merged on every verify. Times are checked
        # here against the clock; a key too short raises instead of warning per request.
        self._decoder = pyjwt.PyJWT(
            options={
                "require": ["exp"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": audience is not None,  # unset audience: aud is not checked
                "enforce_minimum_key_length": True,
            }
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        session_factory: Callable[[], aiohttp.ClientSession] | None,
    ) -> JwtVerifier | None:
        """The verifier the settings describe; None when no JWT method is configured."""
        if not (settings.jwt_secret or settings.jwt_public_key or settings.jwks_url):
            return None
        jwks = None
        if settings.jwks_url:
            if session_factory is None:
                raise ValueError("jwks_url is set: JwtVerifier.from_settings needs a session")
            jwks = JwksCache(
                settings.jwks_url,
                session_factory=session_factory,
                min_refresh_seconds=settings.jwks_refresh_seconds,
            )
        pem = load_public_key_pem(settings.jwt_public_key) if settings.jwt_public_key else None
        return cls(
            secret=settings.jwt_secret,
            public_key_pem=pem,
            jwks=jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway_seconds,
            site_claim=settings.jwt_site_claim,
            default_scopes=settings.jwt_default_scopes,
        )

    def __repr__(self) -> str:
        methods = [name for name, on in (("HS256", self._secret), ("pem", self._public_key)) if on]
        return (
            f"<JwtVerifier methods={methods} pem_alg={self._public_alg} jwks={self._jwks!r} "
            f"cached={len(self._cache)}/{self._cache_size}>"
        )

    async def start(self) -> None:
        """Begin fetching the JWKS in the background; never blocks or fails start-up."""
        if self._jwks is not None and self._prefetch is None:
            self._prefetch = asyncio.get_running_loop().create_task(self._jwks.prefetch())

    async def stop(self) -> None:
        """Cancel the JWKS fetches in flight."""
        task, self._prefetch = self._prefetch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._jwks is not None:
            await self._jwks.stop()

    async def verify(self, token: str) -> JwtIdentity:
        """The identity of a valid token; Unauthorized (with `reason`) for any other."""
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise refused("malformed")
        hit = self._cache.get(token)
        if hit is not None:
            identity, exp = hit
            if exp > self._clock() - self._leeway:
                self._cache.move_to_end(token)
                return identity
            del self._cache[token]
            raise refused("expired")

        alg, kid = self._header(token)
        key = self._static_key(alg, kid)
        if key is None:  # JWKS: in memory after the first fetch, so no await in the common path
            jwks = self._jwks
            assert jwks is not None  # _static_key returns None only when there is one
            jwk = jwks.cached_key(kid) or await jwks.key_for(kid)
            if jwk.algorithm_name != alg:  # an RS256 token against an EC key, or vice versa
                raise refused("alg_not_allowed")
            key = jwk

        self.signature_checks += 1
        try:
            claims = self._decoder.decode(
                token, key, algorithms=[alg], issuer=self._issuer, audience=self._audience
            )
        except pyjwt.MissingRequiredClaimError as exc:
            raise refused(_MISSING_CLAIM_REASONS.get(exc.claim, "malformed")) from exc
        except pyjwt.PyJWTError as exc:
            raise refused(_REASONS.get(type(exc), "malformed")) from exc
        exp = self._check_times(claims)
        identity = self._identity(claims)
        if self._cache_size > 0:
            self._cache[token] = (identity, exp)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return identity

    def _header(self, token: str) -> tuple[str, str | None]:
        """(alg, kid) of the token header, memoized by header segment: an issuer's tokens
        share one header, and PyJWT's parse is a quarter of an uncached verify. Only a
        parse; decode() still validates the whole token."""
        segment = token.partition(".")[0]
        known = self._headers.get(segment)
        if known is not None:
            return known
        try:
            header = pyjwt.get_unverified_header(token)  # also checks kid is a string
        except pyjwt.PyJWTError:
            raise refused("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise refused("alg_not_allowed")
        if len(self._headers) >= _HEADER_MEMO_SIZE:  # made-up headers only cost re-parsing
            self._headers.clear()
        parsed = self._headers[segment] = (alg, header.get("kid"))
        return parsed

    def _static_key(self, alg: str, kid: str | None) -> Any:
        """The secret or PEM key for `alg`; None when the JWKS must provide it."""
        if alg == "HS256":
            if self._secret is None:  # never the public key's bytes as an HMAC secret
                raise refused("alg_not_allowed")
            return self._secret
        if alg not in ASYMMETRIC_ALGORITHMS:  # none, HS384, PS256, ...
            raise refused("alg_not_allowed")
        # With only a PEM the kid is ignored; with a JWKS too, a kid means "look it up there".
        if alg == self._public_alg and (self._jwks is None or kid is None):
            return self._public_key
        if self._jwks is None:
            raise refused("alg_not_allowed")
        return None

    def _check_times(self, claims: Mapping[str, Any]) -> float:
        now = self._clock()
        exp = _number(claims["exp"])  # present: PyJWT's require=["exp"]
        if exp <= now - self._leeway:
            raise refused("expired")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is not None and _number(value) > now + self._leeway:
                raise refused("not_yet_valid")
        return exp

    def _identity(self, claims: dict[str, Any]) -> JwtIdentity:
        site = claims.get(self._site_claim)
        if site is None:
            site_id = None
        elif isinstance(site, str) and site and site.isprintable():
            site_id = site  # printable: it becomes the X-Site-Id line, CR LF would end it
        elif isinstance(site, int) and not isinstance(site, bool):
            site_id = str(site)
        else:  # refused rather than dropped: a site-less token may mean more access, not less
            raise refused("malformed")
        scopes = set(self._default_scopes)
        for name in ("scope", "scp", "scopes"):
            value = claims.get(name)
            if isinstance(value, str):
                scopes.update(value.split())
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, str):
                        scopes.update(item.split())
        # split() took the whitespace out; a control character left makes no scope
        # (key_fields.parse_scope's rule), and the token is refused like a bad site.
        if not "".join(scopes).isprintable():
            raise refused("malformed")
        return JwtIdentity(
            user_id=claims.get("sub") or None,  # a string when present (PyJWT verify_sub)
            site_id=site_id,
            scopes=frozenset(scopes),
            claims=MappingProxyType(claims),
        )


def load_public_key_pem(value: str) -> bytes:
    """`jwt_public_key` as PEM bytes: the PEM text itself, or the file it names."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ConfigError(f"jwt_public_key: cannot read '{value}': {exc.strerror or exc}") from None


def _load_public_key(pem: str | bytes) -> tuple[rsa.RSAPublicKey | ec.EllipticCurvePublicKey, str]:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError("jwt_public_key: not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"jwt_public_key: RSA key of {key.key_size} bits, at least {MIN_RSA_BITS} needed"
            )
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError("jwt_public_key: expected an RSA or EC P-256 public key (RS256/ES256)")


def _check_secret(secret: str) -> bytes:
    data = secret.encode()
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(f"jwt_secret: at least {MIN_SECRET_BYTES} bytes needed for HS256")
    try:  # PyJWT refuses a PEM or SSH key as an HMAC secret; say so at start, not per request
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(data)
    except pyjwt.InvalidKeyError:
        raise ConfigError("jwt_secret: looks like a public key, not an HS256 secret") from None
    return data


def _number(value: object) -> float:
    # NaN compares false both ways (never expires); bool is an int; a huge int overflows.
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):
            if math.isfinite(number := float(value)):
                return number
    raise refused("malformed")
