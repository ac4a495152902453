"""API consumers' signing secrets at rest: AES-256-GCM under the `secrets_key` setting.

A consumer's secret signs its requests (proxy/auth/signatures.py, HMAC-SHA256), so the gateway
needs the secret itself, not a hash of it. Postgres holds only `secret_ciphertext`: a fresh
12-byte nonce, then the ciphertext and its 16-byte tag. The consumer's id is the associated
data: a ciphertext copied onto another consumer's row does not decrypt. Gateways decrypt once,
when a consumer is compiled into the directory, never per request.
"""

from __future__ import annotations

import base64
import os
import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES: Final = 12
SECRET_BYTES: Final = 32  # a secret is 32 random bytes in base64url: 43 characters

NO_SECRETS_KEY: Final = (
    "--with-secret needs secrets_key: a consumer's signing secret is stored encrypted under "
    "it. Set MODGATE_SECRETS_KEY to 32 random bytes in base64 (openssl rand -base64 32), the "
    "same as the gateways'"
)


def generate_secret() -> str:
    """A new signing secret; its UTF-8 bytes are the HMAC key."""
    return secrets.token_urlsafe(SECRET_BYTES)


class SecretBox:
    """Seals and opens consumers' secrets with one AES-256-GCM key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_setting(cls, value: str | None) -> SecretBox | None:
        """The box for `secrets_key` (base64, validated by the settings), or None when unset."""
        return None if value is None else cls(base64.b64decode(value))

    def seal(self, secret: str, consumer_id: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), consumer_id.encode())

    def open(self, sealed: bytes, consumer_id: str) -> bytes | None:
        """The secret's bytes (the HMAC key), or None when `sealed` was not made by this key
        for this consumer (another secrets_key, a copied row, damaged bytes)."""
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, consumer_id.encode())
        except (InvalidTag, ValueError):
            return None

    def __repr__(self) -> str:
        return "<SecretBox key=***>"
