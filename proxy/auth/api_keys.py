"""API keys as the seed makes them: `dmc_live_` + 64 lowercase hex characters.

Only the SHA-256 hex digest (`key_hash`) and the first 12 characters (`key_prefix`, safe to
show and log) are ever stored; the key itself is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from proxy.auth.key_fields import DEFAULT_RATE_LIMIT_PER_DAY, DEFAULT_RATE_LIMIT_PER_MINUTE

KEY_PREFIX = "dmc_live_"
PREFIX_LENGTH = 12
_KEY_RE = re.compile(r"dmc_live_[0-9a-f]{64}")


def generate_key() -> str:
    """A new key from 32 random bytes (the seed's randomBytes(32).toString('hex'))."""
    return KEY_PREFIX + secrets.token_hex(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def is_well_formed(key: str) -> bool:
    """Shape check only; a malformed key is refused without any lookup."""
    return _KEY_RE.fullmatch(key) is not None


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
