"""API keys in memory, looked up by SHA-256 hash on every request: a `CredentialDirectory`
(proxy/auth/credential_directory.py: the LRU, negative entries, the index of active hashes,
the lookup budget, single flight) of compiled `ApiKey`s.

Memory (100k cached keys, bench/memory_bench.py): a cached key keeps only what requests read
(`CachedKeyRecord`), its hash string is also its dict key, and the values many keys repeat
(module and site ids, key prefixes, scope sets, address and origin lists) are one object each.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from proxy.auth.api_keys import ApiKeyRecord
from proxy.auth.client_address import IPNetwork, parse_networks
from proxy.auth.credential_directory import CredentialDirectory, CredentialLoader
from proxy.auth.scopes import Grants
from proxy.interning import interned

KeyLoader = CredentialLoader[ApiKeyRecord]


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


class KeyDirectory(CredentialDirectory[ApiKeyRecord, ApiKey]):
    """Module API keys by hash (the machinery: proxy/auth/credential_directory.py)."""

    def _compile(self, record: ApiKeyRecord) -> ApiKey:
        return ApiKey(record)

    def _current(self, record: ApiKeyRecord) -> bool:
        return record.is_active and record.revoked_at is None
