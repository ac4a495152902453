"""API consumers in memory (EM-33): compiled once per row, looked up by key hash.

A `Consumer` is what a request reads of a `module_api_consumers` row: the fields module API
keys have too (`CachedKeyRecord`: id, module, site, prefix, hash, limits), so the limiter, the
usage recorder and the logs treat both alike; its grants (`read` -> `read:*`, ...,
proxy/auth/scopes.py), its networks and its allowed endpoints, each compiled once per distinct
value and shared, as for keys. The directory is the keys' (proxy/auth/credential_directory.py):
same LRU, negative entries, index, lookup budget; only Postgres holds consumers, so in the
embedded mode it is empty and every consumer key is unknown. A consumer's signing secret is
decrypted here, once per compile (proxy/auth/secret_box.py), so a signed request costs an
HMAC, not an AES-GCM open.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from proxy.auth.client_address import IPNetwork, parse_networks
from proxy.auth.consumer_keys import ConsumerRecord
from proxy.auth.credential_directory import CredentialDirectory, CredentialLoader
from proxy.auth.endpoints import EndpointRules
from proxy.auth.key_directory import CachedKeyRecord
from proxy.auth.scopes import Grants, consumer_grants
from proxy.auth.secret_box import SecretBox
from proxy.interning import interned

log = logging.getLogger("modgate.auth")

ConsumerLoader = CredentialLoader[ConsumerRecord]

_DISTINCT_VALUES = 10_000


@functools.lru_cache(maxsize=_DISTINCT_VALUES)
def _grants(scopes: tuple[str, ...]) -> Grants:
    return consumer_grants(scopes)


@functools.lru_cache(maxsize=_DISTINCT_VALUES)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(cidrs)


@functools.lru_cache(maxsize=_DISTINCT_VALUES)
def _endpoints(patterns: tuple[str, ...]) -> EndpointRules:
    return EndpointRules(patterns)


class Consumer:
    """A consumer compiled for the hot path."""

    __slots__ = ("endpoints", "grants", "networks", "record", "require_signature", "secret")

    def __init__(self, record: ConsumerRecord, box: SecretBox | None = None) -> None:
        self.record = CachedKeyRecord(
            record.id,
            interned(record.module_id),
            interned(record.site_id),
            record.key_prefix,
            record.key_hash,
            record.rate_limit_per_minute,
            record.rate_limit_per_day,
        )
        self.grants = _grants(record.scopes)
        self.networks = _networks(record.allowed_ips)
        self.endpoints = _endpoints(record.allowed_endpoints)
        self.require_signature = record.require_signature
        # The HMAC key; None when the consumer has no secret, or it cannot be opened here (then
        # every signed request, and every request of a consumer requiring signatures, is 401).
        self.secret: bytes | None = None
        if record.secret_ciphertext is not None:
            self.secret = None if box is None else box.open(record.secret_ciphertext, record.id)
            if self.secret is None:
                log.warning(
                    "API consumer %s: its signing secret cannot be decrypted (secrets_key %s)",
                    record.id,
                    "is not set" if box is None else "is not the one it was sealed with",
                )

    def __repr__(self) -> str:
        return f"<Consumer {self.record.key_prefix}… module={self.record.module_id}>"


class ConsumerDirectory(CredentialDirectory[ConsumerRecord, Consumer]):
    """API consumers by key hash; `box` (the `secrets_key`) opens their signing secrets."""

    def __init__(self, *, box: SecretBox | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.box = box

    def _compile(self, record: ConsumerRecord) -> Consumer:
        return Consumer(record, self.box)
