"""API consumer keys (EM-33): `dk_` + 32 random bytes in base64url (43 characters, no padding).

As for module API keys (proxy/auth/api_keys.py, whose hash and prefix rules these are), only
the SHA-256 hex digest (`key_hash`) and the first 12 characters (`key_prefix`) are stored; the
key is shown once, at creation. The seed stores its consumer keys in plain text: not here.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Final

from proxy.auth.api_keys import KeyFormat
from proxy.auth.key_fields import (
    DEFAULT_ALLOWED_ENDPOINTS,
    DEFAULT_CONSUMER_SCOPES,
    DEFAULT_RATE_LIMIT_PER_DAY,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
)

CONSUMER_KEY_FORMAT: Final = KeyFormat("dk_", secrets.token_urlsafe, "[A-Za-z0-9_-]{43}")
CONSUMER_KEY_PREFIX: Final = CONSUMER_KEY_FORMAT.prefix
generate_consumer_key = CONSUMER_KEY_FORMAT.generate
is_well_formed_consumer_key = CONSUMER_KEY_FORMAT.is_well_formed


def is_consumer_key(credential: str) -> bool:
    """Whether a presented credential is meant as a consumer key (a prefix test: the only
    cost a module-key or JWT caller pays for consumers)."""
    return credential.startswith(CONSUMER_KEY_PREFIX)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerRecord:
    """One `module_api_consumers` row as the gateway reads it (no usage counters)."""

    id: str
    module_id: str
    site_id: str
    key_prefix: str
    key_hash: str
    name: str
    scopes: tuple[str, ...] = DEFAULT_CONSUMER_SCOPES
    allowed_endpoints: tuple[str, ...] = DEFAULT_ALLOWED_ENDPOINTS
    rate_limit_per_minute: int | None = DEFAULT_RATE_LIMIT_PER_MINUTE
    rate_limit_per_day: int | None = DEFAULT_RATE_LIMIT_PER_DAY
    allowed_ips: tuple[str, ...] = ()
    is_active: bool = True
    # The signing secret, AES-GCM sealed (proxy/auth/secret_box.py); None: the consumer has none.
    secret_ciphertext: bytes | None = dataclasses.field(default=None, repr=False)
    require_signature: bool = False
