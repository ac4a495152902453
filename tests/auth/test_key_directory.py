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
from tests.support.memory import retained_bytes


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


async def test_cached_key_keeps_what_requests_read() -> None:
    directory = _directory(None, Clock())
    key = generate_key()
    record = _record(key, rate_limit_per_minute=7, rate_limit_per_day=None)
    directory.put(hash_key(key), record)
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
    assert cached.key_hash not in repr(cached)


# Bytes the directory keeps per cached key (its index entry included), for keys as Postgres
# returns them (every value a fresh object, the hash given twice, 100 modules and 100 sites):
# measured 573 on CPython 3.11. A scope set, address list or origin set compiled per key, the
# hash kept twice, or the module and site ids kept per key (778) cost 110 bytes or more.
KEY_BYTES_BUDGET = 650
_MODULES = [str(uuid.uuid4()) for _ in range(100)]
_SITES = [str(uuid.uuid4()) for _ in range(100)]


def _copy(text: str) -> str:
    """An equal string that is a new object (as asyncpg decodes every value)."""
    return text[:1] + text[1:]


def _row_as_fetched(number: int) -> tuple[str, ApiKeyRecord]:
    """A key hash and its row, as a NOTIFY delivers them: no string shared with another row."""
    key = f"dmc_live_a{number % 16:x}0" + secrets.token_hex(32)[3:]  # 16 prefixes
    fresh = "".join
    return hash_key(key), _record(
        key,
        module_id=_copy(_MODULES[number % 100]),
        site_id=_copy(_SITES[number // 7 % 100]),
        scopes=(fresh(["read:", "*"]),),
        allowed_ips=(fresh(["10.0.0.0", "/8"]),),
        allowed_origins=(fresh(["https://", "app.example"]),),
    )


async def test_cached_keys_keep_a_bounded_number_of_bytes_each() -> None:
    directory = _directory(TableLoader(), Clock(), capacity=10_000)
    directory.set_index([])

    def cache_2000_keys() -> None:
        for number in range(2000):
            directory.put(*_row_as_fetched(number))

    _, size = retained_bytes(cache_2000_keys)
    assert len(directory) == 2000
    assert size / len(directory) < KEY_BYTES_BUDGET
    key_hash, record = _row_as_fetched(0)
    directory.put(key_hash, record)
    found = await directory.lookup(key_hash)
    assert found is not None and found.grants.allows("read:x")
    assert found.record.key_prefix == "dmc_live_a00"


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
