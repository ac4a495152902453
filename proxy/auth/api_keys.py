"""API keys as the seed makes them (`dmc_live_` + 64 lowercase hex characters), and what every
kind of key shares: a `KeyFormat` (a fixed prefix before 32 random bytes), the hash and the
shown prefix.

Only the SHA-256 hex digest (`key_hash`) and the first 12 characters (`key_prefix`, safe to
show and log) are ever stored; the key itself is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from proxy.auth.key_fields import DEFAULT_RATE_LIMIT_PER_DAY, DEFAULT_RATE_LIMIT_PER_MINUTE

PREFIX_LENGTH = 12
_RANDOM_BYTES = 32


class KeyFormat:
    """One kind of key: `prefix` followed by 32 random bytes, encoded by `encode` (a `secrets`
    token function) and spelled as `body` (a regular expression) says."""

    __slots__ = ("_encode", "_shape", "prefix")

    def __init__(self, prefix: str, encode: Callable[[int], str], body: str) -> None:
        self.prefix = prefix
        self._encode = encode
        self._shape = re.compile(re.escape(prefix) + body)

    def generate(self) -> str:
        """A new key from 32 random bytes."""
        return self.prefix + self._encode(_RANDOM_BYTES)

    def is_well_formed(self, key: str) -> bool:
        """Shape check only; a malformed key is refused without any lookup."""
        return self._shape.fullmatch(key) is not None

    def __repr__(self) -> str:
        return f"KeyFormat({self.prefix!r}, {self._shape.pattern!r})"


# The seed's randomBytes(32).toString('hex').
API_KEY_FORMAT = KeyFormat("dmc_live_", secrets.token_hex, "[0-9a-f]{64}")
KEY_PREFIX = API_KEY_FORMAT.prefix
generate_key = API_KEY_FORMAT.generate
is_well_formed = API_KEY_FORMAT.is_well_formed


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRecord:
    """One `module_api_keys` row (the seed's columns), minus usage counters."""

    id: str
    module_id: str
    site_id: str
    agency_id: str
    key_prefix: str
    key_hash: str
    name: str
    scopes: tuple[str, ...] = ()
    rate_limit_per_minute: int | None = DEFAULT_RATE_LIMIT_PER_MINUTE
    rate_limit_per_day: int | None = DEFAULT_RATE_LIMIT_PER_DAY
    allowed_ips: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    is_active: bool = True
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
