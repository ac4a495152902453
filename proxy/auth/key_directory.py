"""API keys in memory, looked up by SHA-256 hash on every request.

Strategy:
- A bounded LRU of compiled keys (`ApiKey`), with negative entries (hash -> expiry) so a
  repeated bad key costs a dict lookup, not a query.
- An index of every active key hash (60-bit prefixes: a few MB for 100k keys) loaded in full
  with the route tables and kept current by NOTIFY. A hash outside it is unknown without asking
  Postgres, so a flood of random well-formed keys cannot turn into a flood of queries.
- A hash outside the index may still be a key created a moment ago whose NOTIFY has not
  arrived: it is looked up, but within a budget (token bucket, per second), and remembered.
  While the index is not loaded (Postgres was down at start) every miss goes through the
  budget; past it the caller gets 503, never a wrong 401.
- Concurrent misses for one hash share one query (single flight).
- Memory (100k cached keys, bench/memory_bench.py): a cached key keeps only what requests read
  (`CachedKeyRecord`), its hash string is also its dict key, and the values many keys repeat
  (module and site ids, key prefixes, scope sets, address and origin lists) are one object each.
In the embedded mode the directory is authoritative (every key is installed), so a miss is a
plain no.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from proxy.auth.api_keys import ApiKeyRecord
from proxy.auth.client_address import IPNetwork, parse_networks
from proxy.auth.scopes import Grants
from proxy.errors import ServiceUnavailable, StoreError
from proxy.interning import interned
from proxy.observability import metrics


class KeyLoader(Protocol):
    async def fetch(self, key_hash: str) -> ApiKeyRecord | None:
        """The active row with this hash, or None; StoreError when Postgres fails."""


@dataclass(frozen=True, slots=True)
class CachedKeyRecord:
    """The fields of an `ApiKeyRecord` that requests read, as the directory keeps them.

    The rest (name, agency_id, the raw scope and address lists, the dates) is only read when
    the key is compiled, and 100k cached keys would hold it all.
    """

    id: str
    module_id: str
    site_id: str
    key_prefix: str
    key_hash: str = field(repr=False)
    rate_limit_per_minute: int | None
    rate_limit_per_day: int | None


# Keys mostly share a handful of scope sets, address lists and origin sets: compiled once per
# distinct value and shared (bench/memory_bench.py: each of the three, compiled per key, adds
# 20 to 45 MiB to 100k cached keys). Bounded LRUs: past the bound, rare values are recompiled.
_DISTINCT_VALUES = 10_000


@functools.lru_cache(maxsize=_DISTINCT_VALUES)
def _grants(scopes: tuple[str, ...]) -> Grants:
    return Grants(scopes)


@functools.lru_cache(maxsize=_DISTINCT_VALUES)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(cidrs)


@functools.lru_cache(maxsize=_DISTINCT_VALUES)
def _origins(origins: tuple[str, ...]) -> frozenset[str]:
    return frozenset(origins)


class ApiKey:
    """A key compiled for the hot path: grants, networks and origins parsed once."""

    __slots__ = ("any_origin", "expires_at", "grants", "networks", "origins", "record", "revoked")

    def __init__(self, record: ApiKeyRecord) -> None:
        # Many keys per module and site, and a prefix is "dmc_live_" and 3 hex digits (4096
        # values): one string per value, not one per key.
        self.record = CachedKeyRecord(
            record.id,
            interned(record.module_id),
            interned(record.site_id),
            interned(record.key_prefix),
            record.key_hash,
            record.rate_limit_per_minute,
            record.rate_limit_per_day,
        )
        self.grants = _grants(record.scopes)
        self.networks = _networks(record.allowed_ips)
        self.origins = _origins(record.allowed_origins)
        self.any_origin = "*" in self.origins
        self.expires_at = record.expires_at.timestamp() if record.expires_at else None
        self.revoked = record.revoked_at is not None or not record.is_active

    def __repr__(self) -> str:
        return f"<ApiKey {self.record.key_prefix}… module={self.record.module_id}>"


_LOOKUPS = metrics.BoundLabels(metrics.KEY_LOOKUPS)  # by result


def _index_key(key_hash: str) -> int:
    # 60 bits: an int below 2**60 (two 30-bit digits) takes 32 bytes, a 64-bit one 36, which
    # pymalloc rounds up to 48; a random hash still hits the index with odds of n / 2**60.
    return int(key_hash[:15], 16)


class KeyDirectory:
    def __init__(
        self,
        *,
        capacity: int,
        negative_ttl: float,
        lookup_budget_per_second: float,
        loader: KeyLoader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.negative_ttl = negative_ttl
        # None: embedded mode, every key is installed. Postgres mode: the source, set by the
        # mode's factory (proxy/server/modes.py) once both exist.
        self.loader = loader
        self._clock = clock
        self._cache: OrderedDict[str, ApiKey | float] = OrderedDict()
        self._known: set[int] | None = None
        self._inflight: dict[str, asyncio.Future[ApiKey | None]] = {}
        self._budget_rate = lookup_budget_per_second
        self._budget = lookup_budget_per_second
        self._budget_at = clock()

    # -- what the stores install -----------------------------------------------------------

    def install_all(self, records: Iterable[ApiKeyRecord]) -> None:
        """Embedded mode: these are all the keys there are."""
        self._cache.clear()
        for record in records:
            self._cache[record.key_hash] = ApiKey(record)
        self._known = {_index_key(h) for h in self._cache}

    def cached_hashes(self) -> list[str]:
        """The hashes of the keys held in memory (for a full reload to refresh them)."""
        return [h for h, entry in self._cache.items() if isinstance(entry, ApiKey)]

    def set_index(
        self,
        active_hashes: Iterable[str],
        refreshed: Mapping[str, ApiKeyRecord] | None = None,
    ) -> None:
        """Postgres full reload: the index of active keys, and the cached keys replaced by their
        rows as read in the same reload (`refreshed`; changes made while disconnected were not
        notified). A cached key without a fresh row is dropped, like every negative entry; the
        others stay cached, so they keep working if Postgres goes away again."""
        self._known = {_index_key(h) for h in active_hashes}
        fresh = refreshed or {}
        stale = self._cache
        self._cache = OrderedDict()
        for key_hash, entry in stale.items():  # least recently used first, as before
            record = fresh.get(key_hash) if isinstance(entry, ApiKey) else None
            if record is not None and record.is_active and record.revoked_at is None:
                self._store(key_hash, ApiKey(record))

    def put(self, key_hash: str, record: ApiKeyRecord | None) -> None:
        """The current row for a hash (after a NOTIFY), or None when it is gone or inactive."""
        if record is None or not record.is_active or record.revoked_at is not None:
            self._remember_unknown(key_hash)
            if self._known is not None:
                self._known.discard(_index_key(key_hash))
            return
        self._store(key_hash, ApiKey(record))
        if self._known is not None:
            self._known.add(_index_key(key_hash))

    # -- the hot path -------------------------------------------------------------------------

    async def lookup(self, key_hash: str) -> ApiKey | None:
        entry = self._cache.get(key_hash)
        if entry is not None:
            if isinstance(entry, ApiKey):
                self._cache.move_to_end(key_hash)
                _LOOKUPS("hit").inc()
                return entry
            if entry > self._clock():
                _LOOKUPS("negative_hit").inc()
                return None
            del self._cache[key_hash]
        if self.loader is None:
            _LOOKUPS("unknown").inc()
            return None
        indexed = self._known is not None and _index_key(key_hash) in self._known
        if not indexed and not self._take_budget():
            _LOOKUPS("throttled").inc()
            if self._known is None:
                raise ServiceUnavailable("Credentials cannot be verified right now")
            return None
        return await self._fetch(key_hash)

    def _take_budget(self) -> bool:
        now = self._clock()
        self._budget = min(
            self._budget_rate, self._budget + (now - self._budget_at) * self._budget_rate
        )
        self._budget_at = now
        if self._budget < 1.0:
            return False
        self._budget -= 1.0
        return True

    async def _fetch(self, key_hash: str) -> ApiKey | None:
        pending = self._inflight.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        loader = self.loader
        assert loader is not None
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_hash] = future
        try:
            record = await loader.fetch(key_hash)
        except StoreError as exc:
            _LOOKUPS("error").inc()
            error = ServiceUnavailable("Credentials cannot be verified right now")
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise error from exc
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            del self._inflight[key_hash]
        _LOOKUPS("db_found" if record else "db_unknown").inc()
        if record is None or not record.is_active:
            self._remember_unknown(key_hash)
            future.set_result(None)
            return None
        key = ApiKey(record)
        self._store(key_hash, key)
        future.set_result(key)
        return key

    def _remember_unknown(self, key_hash: str) -> None:
        if self.negative_ttl > 0:
            self._store(key_hash, self._clock() + self.negative_ttl)
        else:
            self._cache.pop(key_hash, None)

    def _store(self, key_hash: str, entry: ApiKey | float) -> None:
        if isinstance(entry, ApiKey) and entry.record.key_hash == key_hash:
            key_hash = entry.record.key_hash  # one string for the dict key and the record
        # Popped, not overwritten: an existing key keeps its old string object otherwise.
        self._cache.pop(key_hash, None)
        self._cache[key_hash] = entry  # last: the most recently used
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        index = "unloaded" if self._known is None else f"{len(self._known)} known"
        return f"<KeyDirectory cached={len(self._cache)}/{self.capacity} index={index}>"
