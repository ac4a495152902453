"""The in-memory key directory, with a loader that is a real object counting its calls.

The Postgres-backed loader is exercised in test_gateway_auth.py; here the loader is an
in-memory table so that cache rules (eviction, negative entries, index, budget, single
flight) can be driven exactly, with an injected clock.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid

import pytest

from proxy.auth.api_keys import ApiKeyRecord, generate_key, hash_key, key_prefix
from proxy.auth.key_directory import KeyDirectory
from proxy.errors import ServiceUnavailable, StoreError


def _record(key: str, **fields: object) -> ApiKeyRecord:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()), "module_id": str(uuid.uuid4()), "site_id": str(uuid.uuid4()),
        "agency_id": str(uuid.uuid4()), "key_prefix": key_prefix(key), "key_hash": hash_key(key),
        "name": "k", **fields,
    }  # fmt: skip
    return ApiKeyRecord(**values)  # type: ignore[arg-type]


class TableLoader:
    def __init__(self) -> None:
        self.rows: dict[str, ApiKeyRecord] = {}
        self.calls = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def fetch(self, key_hash: str) -> ApiKeyRecord | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StoreError("down")
        return self.rows.get(key_hash)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _directory(loader: TableLoader | None, clock: Clock, **kw: float) -> KeyDirectory:
    return KeyDirectory(
        capacity=int(kw.get("capacity", 100)),
        negative_ttl=kw.get("negative_ttl", 60.0),
        lookup_budget_per_second=kw.get("budget", 5.0),
        loader=loader,
        clock=clock,
    )


async def test_embedded_directory_is_authoritative() -> None:
    key = generate_key()
    directory = _directory(None, Clock())
    directory.install_all([_record(key)])
    found = await directory.lookup(hash_key(key))
    assert found is not None and found.record.key_hash == hash_key(key)
    assert await directory.lookup(hash_key(generate_key())) is None


async def test_hit_miss_and_negative_entries_expire() -> None:
    loader, clock = TableLoader(), Clock()
    directory = _directory(loader, clock)
    key = generate_key()
    directory.set_index([])
    assert await directory.lookup(hash_key(key)) is None  # not indexed, within budget
    assert loader.calls == 1
    assert await directory.lookup(hash_key(key)) is None  # negative entry
    assert loader.calls == 1
    loader.rows[hash_key(key)] = _record(key)
    clock.now += 61  # negative entry expired: a key created since is found
    assert await directory.lookup(hash_key(key)) is not None
    assert loader.calls == 2
    assert await directory.lookup(hash_key(key)) is not None
    assert loader.calls == 2


async def test_random_keys_outside_the_index_are_refused_without_queries() -> None:
    loader, clock = TableLoader(), Clock()
    directory = _directory(loader, clock, budget=5.0)
    real = generate_key()
    loader.rows[hash_key(real)] = _record(real)
    directory.set_index([hash_key(real)])
    for _ in range(10_000):
        assert await directory.lookup(hash_key(generate_key())) is None
    assert loader.calls == 5  # the budget: 5 per second, and the clock did not move
    clock.now += 1.0
    for _ in range(100):
        await directory.lookup(hash_key(generate_key()))
    assert loader.calls == 10
    assert await directory.lookup(hash_key(real)) is not None  # indexed: never throttled
    assert loader.calls == 11


async def test_without_index_over_budget_is_503_not_401() -> None:
    loader, clock = TableLoader(), Clock()
    directory = _directory(loader, clock, budget=2.0)
    for _ in range(2):
        await directory.lookup(hash_key(generate_key()))
    with pytest.raises(ServiceUnavailable):
        await directory.lookup(hash_key(generate_key()))


async def test_store_failure_is_503_and_nothing_cached() -> None:
    loader, clock = TableLoader(), Clock()
    directory = _directory(loader, clock)
    key = generate_key()
    directory.set_index([hash_key(key)])
    loader.fail = True
    with pytest.raises(ServiceUnavailable):
        await directory.lookup(hash_key(key))
    loader.fail = False
    loader.rows[hash_key(key)] = _record(key)
    assert await directory.lookup(hash_key(key)) is not None


async def test_concurrent_misses_share_one_query() -> None:
    loader, clock = TableLoader(), Clock()
    directory = _directory(loader, clock)
    key = generate_key()
    loader.rows[hash_key(key)] = _record(key)
    directory.set_index([hash_key(key)])
    loader.gate = asyncio.Event()
    lookups = [asyncio.create_task(directory.lookup(hash_key(key))) for _ in range(50)]
    await asyncio.sleep(0)
    loader.gate.set()
    results = await asyncio.gather(*lookups)
    assert loader.calls == 1
    assert all(r is results[0] and r is not None for r in results)


async def test_capacity_evicts_least_recently_used() -> None:
    loader, clock = TableLoader(), Clock()
    directory = _directory(loader, clock, capacity=3)
    keys = [generate_key() for _ in range(4)]
    for key in keys:
        loader.rows[hash_key(key)] = _record(key)
    directory.set_index([hash_key(k) for k in keys])
    for key in keys[:3]:
        await directory.lookup(hash_key(key))
    await directory.lookup(hash_key(keys[0]))  # keys[0] recently used; keys[1] is oldest
    await directory.lookup(hash_key(keys[3]))
    assert len(directory) == 3
    calls = loader.calls
    await directory.lookup(hash_key(keys[0]))
    assert loader.calls == calls
    await directory.lookup(hash_key(keys[1]))
    assert loader.calls == calls + 1


async def test_put_applies_changes_and_revocations() -> None:
    loader, clock = TableLoader(), Clock()
    directory = _directory(loader, clock)
    key = generate_key()
    directory.set_index([])
    directory.put(hash_key(key), _record(key, scopes=("read:*",)))
    found = await directory.lookup(hash_key(key))
    assert found is not None and found.grants.allows("read:x")
    assert loader.calls == 0
    directory.put(hash_key(key), None)  # revoked or deleted
    assert await directory.lookup(hash_key(key)) is None
    assert loader.calls == 0  # remembered as unknown, no query


async def test_cached_key_keeps_what_requests_read_and_stores_the_hash_once() -> None:
    directory = _directory(None, Clock())
    key = generate_key()
    record = _record(key, rate_limit_per_minute=7, rate_limit_per_day=None)
    directory.put(hash_key(key), record)  # a second, equal hash string: only one is kept
    found = await directory.lookup(hash_key(key))
    assert found is not None
    cached = found.record
    assert (cached.id, cached.module_id, cached.site_id) == (
        record.id,
        record.module_id,
        record.site_id,
    )
    assert (cached.key_prefix, cached.key_hash) == (record.key_prefix, record.key_hash)
    assert (cached.rate_limit_per_minute, cached.rate_limit_per_day) == (7, None)
    assert not hasattr(cached, "agency_id") and not hasattr(cached, "name")
    (stored,) = directory._cache
    assert stored is cached.key_hash
    assert cached.key_hash not in repr(cached)


async def test_keys_of_one_module_share_its_id_and_prefix_strings() -> None:
    directory = _directory(None, Clock())
    module = str(uuid.uuid4())
    keys = ["dmc_live_abc" + secrets.token_hex(32)[3:] for _ in range(2)]
    for key in keys:
        # Equal values in distinct string objects, as in every row fetched from Postgres.
        fresh = _record(key, module_id=str(uuid.UUID(module)))
        assert fresh.module_id is not module
        directory.put(hash_key(key), fresh)
    first, second = [await directory.lookup(hash_key(key)) for key in keys]
    assert first is not None and second is not None
    assert first.record.module_id is second.record.module_id
    assert first.record.key_prefix is second.record.key_prefix


async def test_full_reload_refreshes_cached_keys_instead_of_dropping_them() -> None:
    loader, clock = TableLoader(), Clock()
    directory = _directory(loader, clock)
    kept, changed, gone = generate_key(), generate_key(), generate_key()
    for key in (kept, changed, gone):
        loader.rows[hash_key(key)] = _record(key)
    directory.set_index([hash_key(k) for k in (kept, changed, gone)])
    for key in (kept, changed, gone):
        assert await directory.lookup(hash_key(key)) is not None
    refreshed = {
        hash_key(kept): _record(kept),
        hash_key(changed): _record(changed, scopes=("read:other",)),
    }
    directory.set_index([hash_key(kept), hash_key(changed)], refreshed)
    loader.fail = True  # Postgres away again: what is cached must still answer
    assert await directory.lookup(hash_key(kept)) is not None
    found = await directory.lookup(hash_key(changed))
    assert found is not None and found.grants.allows("read:other")
    assert directory.cached_hashes() == [hash_key(kept), hash_key(changed)]
