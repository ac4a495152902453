"""JwksCache against a real JWKS server (aiohttp test server): kid lookup, rotation, the
refetch rate limit, single-flight, outages and unusable keys.

The cache's monotonic clock is a fake stepped by hand; requests are counted at the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from proxy.auth.jwks import JwksCache
from proxy.auth.jwt import JwtVerifier
from proxy.errors import Unauthorized
from tests.auth.test_jwt import FakeClock, ec_key, make_token, rsa_key, settings

REFRESH = 30.0


def jwk(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str | None) -> dict[str, Any]:
    """The public JWK of a private key, as an identity provider publishes it."""
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = dict(RSAAlgorithm.to_jwk(public, as_dict=True), alg="RS256", use="sig")
    else:
        data = dict(ECAlgorithm.to_jwk(public, as_dict=True), alg="ES256", use="sig")
    if kid is not None:
        data["kid"] = kid
    return data


class JwksServer:
    """Serves `document` at /jwks, counts requests; `gate` holds answers back while clear."""

    def __init__(self) -> None:
        self.document: Any = {"keys": [jwk(rsa_key(), "r1")]}
        self.status = 200
        self.requests = 0
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.arrived.set()
        await self.gate.wait()
        return web.json_response(self.document, status=self.status)


@dataclass
class Env:
    server: JwksServer
    http: Any  # the aiohttp TestServer
    url: str
    clock: FakeClock
    cache: JwksCache
    verifier: JwtVerifier


@pytest.fixture
async def env(aiohttp_server: Callable[..., Awaitable[Any]]) -> AsyncIterator[Env]:
    server = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks", server.handle)
    http = await aiohttp_server(app)
    url = f"http://127.0.0.1:{http.port}/jwks"
    clock = FakeClock(1000.0)
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(
            url, session_factory=lambda: session, min_refresh_seconds=REFRESH, clock=clock
        )
        # cache_size=0: every verify goes to the key lookup, which is what these tests count
        verifier = JwtVerifier(jwks=cache, clock=FakeClock(), cache_size=0)
        yield Env(server, http, url, clock, cache, verifier)
        await verifier.stop()


def rs(kid: str | None, key: Any = None, **claims: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return make_token(key or rsa_key(), "RS256", headers=headers, **claims)


async def reason(env: Env, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        await env.verifier.verify(token)
    return info.value.reason


async def test_key_by_kid(env: Env) -> None:
    env.server.document = {"keys": [jwk(rsa_key(), "r1"), jwk(ec_key(), "e1")]}
    assert (await env.verifier.verify(rs("r1"))).user_id == "user-1"
    es = make_token(ec_key(), "ES256", headers={"kid": "e1"})
    assert (await env.verifier.verify(es)).user_id == "user-1"
    assert env.server.requests == 1
    # the kid's key fixes the algorithm: an ES256 token naming the RSA key is refused
    assert await reason(env, make_token(ec_key(), "ES256", headers={"kid": "r1"})) == (
        "alg_not_allowed"
    )
    assert await reason(env, rs(None)) == "unknown_kid"  # two keys: the token must say which
    assert await reason(env, rs("r1", key=rsa.generate_private_key(65537, 2048))) == (
        "bad_signature"
    )
    assert env.server.requests == 1


async def test_single_key_without_kid(env: Env) -> None:
    env.server.document = {"keys": [jwk(rsa_key(), None)]}
    assert (await env.verifier.verify(rs(None))).user_id == "user-1"
    assert "keys=1" in repr(env.cache)


async def test_rotation_refetches_once(env: Env) -> None:
    assert (await env.verifier.verify(rs("r1"))).user_id == "user-1"
    assert env.server.requests == 1
    new_key = rsa.generate_private_key(65537, 2048)
    env.server.document = {"keys": [jwk(new_key, "r2")]}
    env.clock.now += REFRESH + 1
    assert (await env.verifier.verify(rs("r2", key=new_key))).user_id == "user-1"
    assert (await env.verifier.verify(rs("r2", key=new_key, n=2))).user_id == "user-1"
    assert env.server.requests == 2
    assert await reason(env, rs("r1")) == "unknown_kid"  # rotated out (within the limit)
    assert env.server.requests == 2


async def test_unknown_kid_is_rate_limited(env: Env) -> None:
    await env.verifier.verify(rs("r1"))
    for kid in ("nope", "nope", "other"):
        assert await reason(env, rs(kid)) == "unknown_kid"
    assert env.server.requests == 1
    env.clock.now += REFRESH - 1
    assert await reason(env, rs("nope")) == "unknown_kid"
    assert env.server.requests == 1
    env.clock.now += 2
    assert await reason(env, rs("nope")) == "unknown_kid"
    assert env.server.requests == 2


async def test_concurrent_unknown_kids_share_one_fetch(env: Env) -> None:
    await env.verifier.verify(rs("r1"))
    new_key = ec.generate_private_key(ec.SECP256R1())
    env.server.document = {"keys": [jwk(rsa_key(), "r1"), jwk(new_key, "e2")]}
    env.server.gate.clear()
    env.server.arrived.clear()
    env.clock.now += REFRESH + 1
    tokens = [make_token(new_key, "ES256", headers={"kid": "e2"}, n=n) for n in range(20)]
    calls = [asyncio.ensure_future(env.verifier.verify(token)) for token in tokens]
    await env.server.arrived.wait()
    env.server.gate.set()
    identities = await asyncio.gather(*calls)
    assert all(identity.user_id == "user-1" for identity in identities)
    assert env.server.requests == 2


async def test_cold_start_concurrent_and_prefetch(env: Env) -> None:
    results = await asyncio.gather(*(env.verifier.verify(rs("r1", n=n)) for n in range(10)))
    assert len(results) == 10
    assert env.server.requests == 1
    # start(): a background fetch that a verify right after shares
    env.clock.now += REFRESH + 1
    env.server.gate.clear()
    await env.verifier.start()
    waiting = asyncio.ensure_future(env.verifier.verify(rs("r9")))
    await env.server.arrived.wait()
    env.server.gate.set()
    with pytest.raises(Unauthorized):
        await waiting
    assert env.server.requests == 2


async def test_server_down_keeps_previous_keys(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await env.verifier.verify(rs("r1"))
    await env.http.close()
    env.clock.now += REFRESH + 1
    unknown = rs("r2")
    with caplog.at_level(logging.WARNING, logger="proxy.auth.jwks"):
        assert await reason(env, unknown) == "jwks_unavailable"
    assert "JWKS fetch from" in caplog.text and "keeping 1 cached keys" in caplog.text
    assert unknown not in caplog.text
    assert (await env.verifier.verify(rs("r1", n=2))).user_id == "user-1"
    assert await reason(env, unknown) == "jwks_unavailable"  # rate-limited, no new attempt
    assert env.cache.fetches == 2
    assert "state=failing" in repr(env.cache)


@pytest.mark.parametrize(
    "failure",
    ["status", "not_json", "not_jwks", "no_usable_key"],
)
async def test_bad_answers_keep_previous_keys(env: Env, failure: str) -> None:
    await env.verifier.verify(rs("r1"))
    env.clock.now += REFRESH + 1
    if failure == "status":
        env.server.status = 503
    elif failure == "not_json":
        env.server.document = "<html>"
    elif failure == "not_jwks":
        env.server.document = {"keys": "nope"}
    else:
        env.server.document = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}
    assert not await env.cache.prefetch()
    assert env.server.requests == 2
    assert (await env.verifier.verify(rs("r1", n=2))).user_id == "user-1"


async def test_cold_start_with_server_down(env: Env) -> None:
    await env.http.close()
    assert await reason(env, rs("r1")) == "jwks_unavailable"
    await env.verifier.start()  # a failing prefetch never raises
    await env.verifier.stop()


async def test_unusable_keys_are_skipped_not_fatal(env: Env) -> None:
    ed = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    env.server.document = {
        "keys": [
            dict(ed, kid="ed"),
            {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "hs"},
            {"kty": "RSA", "n": "!!", "e": "AQAB", "kid": "broken"},
            {"kty": "XYZ", "kid": "alien"},
            dict(jwk(rsa_key(), "enc"), use="enc"),
            jwk(rsa.generate_private_key(65537, 1024), "weak"),
            jwk(rsa_key(), "r1"),
            "not an object",
        ]
    }
    assert (await env.verifier.verify(rs("r1"))).user_id == "user-1"
    assert "keys=1" in repr(env.cache)
    for kid in ("ed", "hs", "broken", "enc", "weak"):
        assert await reason(env, rs(kid)) == "unknown_kid"
    assert env.server.requests == 1


async def test_stale_set_is_revalidated_in_the_background(env: Env) -> None:
    await env.verifier.verify(rs("r1"))
    env.server.document = {"keys": [jwk(ec_key(), "e1")]}  # r1 withdrawn
    env.clock.now += 301  # past max_age_seconds (300)
    assert (await env.verifier.verify(rs("r1"))).user_id == "user-1"  # served, not waited for
    assert await env.cache.prefetch()  # joins the background fetch
    assert env.server.requests == 2
    assert await reason(env, rs("r1")) == "unknown_kid"


async def test_stale_set_with_server_down_is_retried_at_the_refresh_rate(env: Env) -> None:
    await env.verifier.verify(rs("r1"))
    await env.http.close()
    env.clock.now += 301  # stale: the next verify serves r1 and revalidates in the background
    assert (await env.verifier.verify(rs("r1", n=1))).user_id == "user-1"
    assert not await env.cache.prefetch()  # joins that revalidation, which fails
    for n in range(2, 6):  # still served, and no new attempt before min_refresh_seconds
        assert (await env.verifier.verify(rs("r1", n=n))).user_id == "user-1"
    assert env.cache.fetches == 2
    env.clock.now += REFRESH
    await env.verifier.verify(rs("r1", n=9))
    assert not await env.cache.prefetch()
    assert env.cache.fetches == 3


async def test_repr_shows_url_keys_and_age(env: Env) -> None:
    assert repr(env.cache) == f"<JwksCache url='{env.url}' keys=0 fetched=never state=new>"
    await env.cache.prefetch()
    env.clock.now += 12.5
    assert repr(env.cache) == f"<JwksCache url='{env.url}' keys=1 fetched=12.5s ago state=ok>"


async def test_from_settings_with_jwks_url(env: Env, tmp_path: Path) -> None:
    config = settings(tmp_path, jwks_url=env.url)
    with pytest.raises(ValueError, match="needs a session"):
        JwtVerifier.from_settings(config, None)
    async with aiohttp.ClientSession() as session:
        verifier = JwtVerifier.from_settings(config, lambda: session)
        assert verifier is not None
        await verifier.start()
        assert (await verifier.verify(rs("r1", exp=4e9))).user_id == "user-1"
        await verifier.stop()
