"""Credentials in memory, looked up by SHA-256 hash on every request: the machinery that
module API keys (proxy/auth/key_directory.py) and API consumers (proxy/auth/consumers.py)
share; each subclass says how a row compiles (`_compile`) and when a row still counts
(`_current`).

Strategy:
- A bounded LRU of compiled credentials, with negative entries (hash -> expiry) so a
  repeated bad key costs a dict lookup, not a query.
- An index of every active hash (60-bit prefixes: a few MB for 100k credentials) loaded in
  full with the route tables and kept current by NOTIFY. A hash outside it is unknown without
  asking Postgres, so a flood of random well-formed keys cannot turn into a flood of queries.
- A hash outside the index may still be a credential created a moment ago whose NOTIFY has not
  arrived: it is looked up, but within a budget (token bucket, per second), and remembered.
  While the index is not loaded (Postgres was down at start) every miss goes through the
  budget; past it the caller gets 503, never a wrong 401.
- Concurrent misses for one hash share one query (single flight).
In the embedded mode a directory is authoritative (every credential is installed, or there are
none, as for consumers), so a miss is a plain no.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, Protocol, TypeVar

from proxy.errors import ServiceUnavailable, StoreError
from proxy.observability import metrics


class CredentialRow(Protocol):
    """What a directory reads of a stored row."""

    @property
    def key_hash(self) -> str: ...

    @property
    def is_active(self) -> bool: ...


class HashedRecord(Protocol):
    @property
    def key_hash(self) -> str: ...


class Compiled(Protocol):
    """What a directory reads of a compiled credential."""

    @property
    def record(self) -> HashedRecord: ...


R = TypeVar("R", bound=CredentialRow)
E = TypeVar("E", bound=Compiled)


class CredentialLoader(Protocol[R]):  # type: ignore[misc]
    async def fetch(self, key_hash: str) -> R | None:
        """The active row with this hash, or None; StoreError when Postgres fails."""


_LOOKUPS = metrics.BoundLabels(metrics.KEY_LOOKUPS)  # by result; keys and consumers alike


def _index_key(key_hash: str) -> int:
    # 60 bits: an int below 2**60 (two 30-bit digits) takes 32 bytes, a 64-bit one 36, which
    # pymalloc rounds up to 48; a random hash still hits the index with odds of n / 2**60.
    return int(key_hash[:15], 16)


class CredentialDirectory(ABC, Generic[R, E]):
    def __init__(
        self,
        *,
        capacity: int,
        negative_ttl: float,
        lookup_budget_per_second: float,
        loader: CredentialLoader[R] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.negative_ttl = negative_ttl
        # None: embedded mode, every credential is installed. Postgres mode: the source, set by
        # the mode's factory (proxy/server/modes.py) once both exist.
        self.loader = loader
        self._clock = clock
        self._cache: OrderedDict[str, E | float] = OrderedDict()
        self._known: set[int] | None = None
        self._inflight: dict[str, asyncio.Future[E | None]] = {}
        self._budget_rate = lookup_budget_per_second
        self._budget = lookup_budget_per_second
        self._budget_at = clock()

    @abstractmethod
    def _compile(self, record: R) -> E:
        """The row as requests read it."""

    def _current(self, record: R) -> bool:
        """Whether a row (from a NOTIFY or a full reload) is worth caching."""
        return record.is_active

    # -- what the stores install -----------------------------------------------------------

    def install_all(self, records: Iterable[R]) -> None:
        """Embedded mode: these are all the credentials there are."""
        self._cache.clear()
        for record in records:
            self._cache[record.key_hash] = self._compile(record)
        self._known = {_index_key(h) for h in self._cache}

    def cached_hashes(self) -> list[str]:
        """The hashes of the credentials held in memory (for a full reload to refresh them)."""
        return [h for h, entry in self._cache.items() if not isinstance(entry, float)]

    def set_index(
        self,
        active_hashes: Iterable[str],
        refreshed: Mapping[str, R] | None = None,
    ) -> None:
        """Postgres full reload: the index of active credentials, and the cached ones replaced
        by their rows as read in the same reload (`refreshed`; changes made while disconnected
        were not notified). A cached credential without a fresh row is dropped, like every
        negative entry; the others stay cached, so they keep working if Postgres goes away
        again."""
        self._known = {_index_key(h) for h in active_hashes}
        fresh = refreshed or {}
        stale = self._cache
        self._cache = OrderedDict()
        for key_hash, entry in stale.items():  # least recently used first, as before
            record = None if isinstance(entry, float) else fresh.get(key_hash)
            if record is not None and self._current(record):
                self._store(key_hash, self._compile(record))

    def put(self, key_hash: str, record: R | None) -> None:
        """The current row for a hash (after a NOTIFY), or None when it is gone or inactive."""
        if record is None or not self._current(record):
            self._remember_unknown(key_hash)
            if self._known is not None:
                self._known.discard(_index_key(key_hash))
            return
        self._store(key_hash, self._compile(record))
        if self._known is not None:
            self._known.add(_index_key(key_hash))

    # -- the hot path -------------------------------------------------------------------------

    async def lookup(self, key_hash: str) -> E | None:
        entry = self._cache.get(key_hash)
        if entry is not None:
            if not isinstance(entry, float):
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

    async def _fetch(self, key_hash: str) -> E | None:
        pending = self._inflight.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        loader = self.loader
        assert loader is not None
        future: asyncio.Future[E | None] = asyncio.get_running_loop().create_future()
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
        compiled = self._compile(record)
        self._store(key_hash, compiled)
        future.set_result(compiled)
        return compiled

    def _remember_unknown(self, key_hash: str) -> None:
        if self.negative_ttl > 0:
            self._store(key_hash, float(self._clock() + self.negative_ttl))  # float: negative
        else:
            self._cache.pop(key_hash, None)

    def _store(self, key_hash: str, entry: E | float) -> None:
        if not isinstance(entry, float) and entry.record.key_hash == key_hash:
            key_hash = entry.record.key_hash  # one string for the dict key and the record
        # Popped, not overwritten: an existing entry keeps its old string object otherwise.
        self._cache.pop(key_hash, None)
        self._cache[key_hash] = entry  # last: the most recently used
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        index = "unloaded" if self._known is None else f"{len(self._known)} known"
        return f"<{type(self).__name__} cached={len(self._cache)}/{self.capacity} index={index}>"
