"""Client-side request signing (RFC 9421, hmac-sha256) as an API consumer signs: the same
library the gateway verifies with, so the tests sign like a real client would."""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass, field

from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms


@dataclass
class _Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def signed_headers(
    method: str,
    url: str,
    *,
    key_id: str,
    secret: str,
    body: bytes | None = None,
    created: datetime.datetime | None = None,
    nonce: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """`headers` plus Signature-Input, Signature and, with a body, Content-Digest (sha-256),
    covering @method, @target-uri (`url`: what the client calls, scheme and host included),
    content-digest with a body; `created` now and a fresh `nonce` unless given."""
    request = _Request(method, url, dict(headers or {}))
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: secret.encode()}),
    )
    covered = ["@method", "@target-uri"] + (["content-digest"] if body else [])
    signer.sign(
        request,
        key_id=key_id,
        created=created,
        nonce=nonce or secrets.token_urlsafe(16),
        label="sig1",
        covered_component_ids=covered,
        body=body or None,
    )
    return request.headers
