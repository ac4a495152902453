"""The in-process nonce store of signed requests: a nonce is remembered as long as a signature
carrying it can be valid, and a full store refuses rather than forgets a live nonce."""

from __future__ import annotations

import pytest

from proxy.auth.signatures import MemoryNonces
from proxy.errors import ServiceUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_nonce_outlives_a_signature_created_in_the_future() -> None:
    # created may be up to `window` ahead, and the signature is valid until created + window.
    clock = Clock()
    nonces = MemoryNonces(window=300, clock=clock)
    assert await nonces.first_use("c1", "n1")
    clock.now += 301
    assert not await nonces.first_use("c1", "n1")
    clock.now += 300
    assert await nonces.first_use("c1", "n1")  # every signature with it has expired


async def test_a_full_store_refuses_instead_of_forgetting_a_live_nonce() -> None:
    clock = Clock()
    nonces = MemoryNonces(window=300, capacity=2, clock=clock)
    assert await nonces.first_use("victim", "n1")
    assert await nonces.first_use("other", "a")
    with pytest.raises(ServiceUnavailable):
        await nonces.first_use("other", "b")
    assert not await nonces.first_use("victim", "n1")  # still remembered: no replay
    clock.now += 601
    assert await nonces.first_use("other", "b")  # expired entries made room
