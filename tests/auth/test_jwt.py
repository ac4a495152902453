"""JwtVerifier: algorithms, claims, scopes, the verified-token cache and from_settings.

Time is a fake wall clock passed to the verifier; no test sleeps.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from proxy.auth.jwt import MAX_TOKEN_BYTES, JwtIdentity, JwtVerifier
from proxy.errors import ConfigError, Unauthorized
from proxy.settings import load_settings

SECRET = "test-secret-that-is-long-enough-for-hs256"
NOW = 1_700_000_000.0
LEEWAY = 30.0


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_token(
    key: Any = SECRET, alg: str = "HS256", headers: dict[str, Any] | None = None, **claims: Any
) -> str:
    """A signed token; claims default to sub user-1 and exp in an hour (None drops a claim)."""
    payload = {"sub": "user-1", "exp": NOW + 3600, **claims}
    payload = {name: value for name, value in payload.items() if value is not None}
    return pyjwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built without PyJWT (which refuses to sign the attacks below)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def make_verifier(**kwargs: Any) -> JwtVerifier:
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("clock", FakeClock())
    kwargs.setdefault("leeway", LEEWAY)
    return JwtVerifier(**kwargs)


async def refused(verifier: JwtVerifier, token: str) -> str:
    """The reason `verify` gives for refusing; asserts the client-facing message is generic."""
    with pytest.raises(Unauthorized) as info:
        await verifier.verify(token)
    assert info.value.message == "Invalid or expired token"
    assert info.value.status == 401
    return info.value.reason


async def test_hs256_ok() -> None:
    identity = await make_verifier().verify(make_token(role="x"))
    assert isinstance(identity, JwtIdentity)
    assert identity.user_id == "user-1"
    assert identity.site_id is None
    assert identity.scopes == frozenset()
    assert identity.claims["role"] == "x"


async def test_scopes_from_every_claim_and_defaults() -> None:
    token = make_token(scope="a b", scp=["c", "d e", 7], scopes=["f"])
    identity = await make_verifier(default_scopes=("g",)).verify(token)
    assert identity.scopes == frozenset("abcdefg")
    assert (await make_verifier().verify(make_token(scp="x y"))).scopes == {"x", "y"}


async def test_no_star_is_granted_implicitly() -> None:
    identity = await make_verifier().verify(make_token())
    assert identity.scopes == frozenset()
    identity = await make_verifier(default_scopes=("read:crm",)).verify(make_token())
    assert identity.scopes == {"read:crm"}
    # only when the token says so
    assert (await make_verifier().verify(make_token(scope="*"))).scopes == {"*"}


async def test_site_claim_default_and_custom_name() -> None:
    assert (await make_verifier().verify(make_token(site_id="s-1"))).site_id == "s-1"
    assert (await make_verifier().verify(make_token(site_id=42))).site_id == "42"
    custom = make_verifier(site_claim="tenant")
    identity = await custom.verify(make_token(tenant="t-9", site_id="ignored"))
    assert identity.site_id == "t-9"
    assert await refused(make_verifier(), make_token(site_id={"id": 1})) == "malformed"


@pytest.mark.parametrize(
    "claims",
    [
        {"site_id": "s-1\r\nX-User-Id: admin"},  # the X-Site-Id line would end early
        {"site_id": "s-1\x00"},
        {"scope": "read:a read:b\x00"},  # split() takes out whitespace, not other controls
        {"scp": ["read:a", "read:\x7f"]},
    ],
)
async def test_site_and_scopes_with_control_characters_are_refused(claims: dict[str, Any]) -> None:
    assert await refused(make_verifier(), make_token(**claims)) == "malformed"


async def test_sub_is_optional() -> None:
    identity = await make_verifier().verify(make_token(sub=None, scope="svc"))
    assert identity.user_id is None
    assert identity.scopes == {"svc"}


async def test_expiry_with_injected_clock_and_leeway() -> None:
    clock = FakeClock()
    token = make_token(exp=NOW + 10)
    clock.now = NOW + 10 + LEEWAY - 1  # past exp, within leeway
    assert (await make_verifier(clock=clock, cache_size=0).verify(token)).user_id == "user-1"
    clock.now = NOW + 10 + LEEWAY + 1
    assert await refused(make_verifier(clock=clock), token) == "expired"


async def test_nbf_and_iat_in_the_future() -> None:
    verifier = make_verifier()
    assert await refused(verifier, make_token(nbf=NOW + 100)) == "not_yet_valid"
    assert await refused(verifier, make_token(iat=NOW + 100)) == "not_yet_valid"
    assert (await verifier.verify(make_token(nbf=NOW + LEEWAY - 1, iat=NOW))).user_id == "user-1"
    assert await refused(verifier, make_token(nbf="soon")) == "malformed"


async def test_issuer() -> None:
    verifier = make_verifier(issuer="https://idp.example")
    assert (await verifier.verify(make_token(iss="https://idp.example"))).user_id == "user-1"
    assert await refused(verifier, make_token(iss="https://evil.example")) == "bad_issuer"
    assert await refused(verifier, make_token()) == "bad_issuer"


async def test_audience_string_and_list() -> None:
    verifier = make_verifier(audience="modgate")
    assert (await verifier.verify(make_token(aud="modgate"))).user_id == "user-1"
    assert (await verifier.verify(make_token(aud=["other", "modgate"]))).user_id == "user-1"
    assert await refused(verifier, make_token(aud="other")) == "bad_audience"
    assert await refused(verifier, make_token(aud=["other", "more"])) == "bad_audience"
    assert await refused(verifier, make_token()) == "bad_audience"
    # no audience configured: aud is not checked
    assert (await make_verifier().verify(make_token(aud="anything"))).user_id == "user-1"


async def test_wrong_key_and_tampered_payload() -> None:
    verifier = make_verifier()
    assert await refused(verifier, make_token("another-secret-" * 3)) == "bad_signature"
    header, payload, signature = make_token().split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[raw.index(b"user-1") + 5] ^= 0x03  # user-1 -> user-2, still valid JSON
    tampered = f"{header}.{b64(bytes(raw))}.{signature}"
    assert await refused(verifier, tampered) == "bad_signature"


async def test_alg_none_and_unconfigured_algorithms() -> None:
    verifier = make_verifier()
    claims = {"sub": "admin", "exp": NOW + 60, "scope": "*"}
    for alg in ("none", "None", "HS512", "PS256"):
        token = hand_made({"alg": alg, "typ": "JWT"}, claims, None)
        assert await refused(verifier, token) == "alg_not_allowed"
    assert await refused(verifier, hand_made({"typ": "JWT"}, claims, None)) == "alg_not_allowed"
    # RS256 with no public key configured
    assert await refused(verifier, make_token(rsa_key(), "RS256")) == "alg_not_allowed"
    assert verifier.signature_checks == 0


async def test_algorithm_confusion_is_refused() -> None:
    pem = public_pem(rsa_key())
    forged = hand_made({"alg": "HS256", "typ": "JWT"}, {"exp": NOW + 60}, pem.encode())
    only_public = make_verifier(secret=None, public_key_pem=pem)
    assert await refused(only_public, forged) == "alg_not_allowed"
    both = make_verifier(public_key_pem=pem)  # HS256 is checked with the secret, never the PEM
    assert await refused(both, forged) == "bad_signature"


async def test_rs256_and_es256_with_pem() -> None:
    rs = make_verifier(secret=None, public_key_pem=public_pem(rsa_key()))
    es = make_verifier(secret=None, public_key_pem=public_pem(ec_key()).encode())
    token = make_token(rsa_key(), "RS256", headers={"kid": "ignored-with-a-pem"})
    assert (await rs.verify(token)).user_id == "user-1"
    assert (await es.verify(make_token(ec_key(), "ES256"))).user_id == "user-1"
    assert await refused(rs, make_token(ec_key(), "ES256")) == "alg_not_allowed"
    assert await refused(es, make_token(rsa_key(), "RS256")) == "alg_not_allowed"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert await refused(rs, make_token(other, "RS256")) == "bad_signature"
    assert await refused(rs, make_token(SECRET)) == "alg_not_allowed"


async def test_missing_exp_and_bad_exp() -> None:
    verifier = make_verifier()
    assert await refused(verifier, make_token(exp=None)) == "missing_exp"
    token = hand_made({"alg": "HS256"}, {"exp": float("nan")}, SECRET.encode())
    assert await refused(verifier, token) == "malformed"
    assert await refused(verifier, make_token(exp=10**400)) == "malformed"


@pytest.mark.parametrize(
    "token", ["", "garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9.e30.", "é.é.é"]
)
async def test_garbage_tokens(token: str) -> None:
    assert await refused(make_verifier(), token) in {"malformed", "bad_signature"}


async def test_oversize_token_is_refused_unparsed() -> None:
    verifier = make_verifier()
    big = make_token(pad="x" * MAX_TOKEN_BYTES)
    assert await refused(verifier, big) == "malformed"
    assert verifier.signature_checks == 0


async def test_cache_skips_the_signature_check_until_exp() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock=clock)
    token = make_token(exp=NOW + 100)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first
    assert verifier.signature_checks == 1
    clock.now = NOW + 100 + LEEWAY  # the cached entry is checked against the clock
    assert await refused(verifier, token) == "expired"
    assert verifier.signature_checks == 1  # refused from the cache
    assert await refused(verifier, token) == "expired"
    assert verifier.signature_checks == 2  # the entry was dropped


async def test_cache_is_bounded_and_holds_only_valid_tokens() -> None:
    verifier = make_verifier(cache_size=2)
    tokens = [make_token(n=n) for n in range(3)]
    for token in tokens:
        await verifier.verify(token)
    await verifier.verify(tokens[2])
    await verifier.verify(tokens[1])
    assert verifier.signature_checks == 3
    await verifier.verify(tokens[0])  # evicted, least recently used
    assert verifier.signature_checks == 4
    bad = make_token("another-secret-" * 3)
    for _ in range(2):
        await refused(verifier, bad)
    assert verifier.signature_checks == 6


def settings(tmp_path: Path, **overrides: object) -> Any:
    config = tmp_path / "gateway.yaml"
    config.write_text("{}\n")
    return load_settings(config, environ={}, overrides=overrides)


def test_from_settings_none_when_nothing_configured(tmp_path: Path) -> None:
    assert JwtVerifier.from_settings(settings(tmp_path), None) is None


async def test_from_settings_reads_pem_text_and_file(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text(public_pem(ec_key()))
    for value in (str(path), public_pem(ec_key())):
        verifier = JwtVerifier.from_settings(
            settings(tmp_path, jwt_public_key=value, jwt_audience="modgate"), None
        )
        assert verifier is not None
        identity = await verifier.verify(make_token(ec_key(), "ES256", aud="modgate", exp=4e9))
        assert identity.user_id == "user-1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        ("{dir}/missing.pem", "cannot read '{dir}/missing.pem': No such file or directory"),
        ("{dir}", "cannot read '{dir}': Is a directory"),
        ("{dir}/not-pem.txt", "not a PEM public key"),
    ],
)
def test_from_settings_refuses_unusable_public_key(
    tmp_path: Path, value: str, message: str
) -> None:
    (tmp_path / "not-pem.txt").write_text("hello\n")
    config = settings(tmp_path, jwt_public_key=value.format(dir=tmp_path))
    with pytest.raises(ConfigError) as info:
        JwtVerifier.from_settings(config, None)
    assert str(info.value) == "jwt_public_key: " + message.format(dir=tmp_path)


def test_unsupported_keys_and_weak_secrets_are_refused_at_start(tmp_path: Path) -> None:
    p384 = public_pem(ec.generate_private_key(ec.SECP384R1()))
    small_rsa = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    cases = [
        ({"jwt_public_key": p384}, "jwt_public_key: expected an RSA or EC P-256 public key"),
        ({"jwt_public_key": small_rsa}, "jwt_public_key: RSA key of 1024 bits, at least 2048"),
        ({"jwt_secret": "short"}, "jwt_secret: at least 32 bytes needed for HS256"),
        ({"jwt_secret": public_pem(rsa_key())}, "jwt_secret: looks like a public key"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            JwtVerifier.from_settings(settings(tmp_path, **overrides), None)
