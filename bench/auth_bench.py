"""Cost of the auth step per request: authenticate + authorize, as the pipeline calls them.

    .venv/bin/python bench/auth_bench.py

Measures, in µs per request (median of several runs), an API key already in the directory
(the steady state), an unknown key refused by the index, a Bearer HS256 JWT (cached after
its first verification, and uncached), and RS256 uncached. Prints figures; asserts nothing.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.auth.api_keys import ApiKeyRecord, generate_key, hash_key, key_prefix
from proxy.auth.authenticator import Authenticator, authorize
from proxy.auth.jwt import JwtVerifier
from proxy.auth.key_directory import KeyDirectory
from proxy.routing.model import RouteSpec

MODULE = str(uuid.uuid4())
ROUTE = RouteSpec(path="/contacts/:id", method="GET", required_scopes=("read:contacts",))
RUNS, N = 7, 20_000


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


async def _time(
    auth: Authenticator,
    headers: CIMultiDictProxy[str],
    *,
    fresh: list[str] | None = None,
    expect_ok: bool = True,
) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter_ns()
        for i in range(N):
            h = headers if fresh is None else _headers(Authorization=f"Bearer {fresh[i]}")
            try:
                principal = await auth.authenticate(h, ROUTE, "")
                authorize(principal, ROUTE, MODULE, None, None)
            except Exception:
                if expect_ok:
                    raise
        samples.append((time.perf_counter_ns() - started) / N / 1000)
    return statistics.median(samples)


async def main() -> None:
    key = generate_key()
    record = ApiKeyRecord(
        id=str(uuid.uuid4()), module_id=MODULE, site_id=str(uuid.uuid4()),
        agency_id=str(uuid.uuid4()), key_prefix=key_prefix(key), key_hash=hash_key(key),
        name="bench", scopes=("read:*",),
    )  # fmt: skip
    keys = KeyDirectory(capacity=100_000, negative_ttl=60, lookup_budget_per_second=50)
    keys.install_all([record])
    secret = "bench-secret-" + "x" * 32
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        rsa_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    hs = JwtVerifier(secret=secret)
    rs = JwtVerifier(public_key_pem=pem)
    exp = int(time.time()) + 3600
    claims = {"sub": "u", "scope": "read:contacts", "exp": exp}

    def tokens(k: object, alg: str) -> list[str]:
        return [pyjwt.encode({**claims, "jti": str(i)}, k, algorithm=alg) for i in range(N)]

    rows = [
        ("API key (in directory)", await _time(Authenticator(keys),
                                               _headers(**{"X-API-Key": key}))),
        ("API key unknown (401)", await _time(Authenticator(keys),
                                              _headers(**{"X-API-Key": generate_key()}),
                                              expect_ok=False)),
        ("JWT HS256, repeated token", await _time(Authenticator(keys, hs), _headers(
            Authorization="Bearer " + pyjwt.encode(claims, secret, algorithm="HS256")))),
        ("JWT HS256, new token each time", await _time(Authenticator(keys, hs), _headers(),
                                                       fresh=tokens(secret, "HS256"))),
        ("JWT RS256, new token each time", await _time(Authenticator(keys, rs), _headers(),
                                                       fresh=tokens(rsa_key, "RS256"))),
    ]  # fmt: skip
    print(
        f"auth step (authenticate + authorize), CPython {sys.version.split()[0]}, "
        f"median of {RUNS} x {N:,}"
    )
    for name, micros in rows:
        print(f"  {name:34s} {micros:8.2f} µs/request")


if __name__ == "__main__":
    asyncio.run(main())
