"""`api_keys` rows of the embedded manifest, validated into ApiKeyRecords.

The rows use the `module_api_keys` column names. Only `key_hash` is accepted, never the key
itself: the file is configuration and may be read by anyone who can read the deployment.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from proxy.auth.api_keys import ApiKeyRecord
from proxy.auth.key_fields import normalize_network, normalize_origin
from proxy.errors import ManifestError

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset(
    {
        "id", "module_id", "site_id", "agency_id", "key_prefix", "key_hash", "name", "scopes",
        "rate_limit_per_minute", "rate_limit_per_day", "allowed_ips", "allowed_origins",
        "is_active", "expires_at", "revoked_at",
    }
)  # fmt: skip


def records_from_manifest(
    rows: Sequence[Mapping[str, Any]], source: str = "<manifest>"
) -> list[ApiKeyRecord]:
    return [_record(row, source, f"api_keys[{i}]") for i, row in enumerate(rows)]


def _record(row: Mapping[str, Any], source: str, where: str) -> ApiKeyRecord:
    def fail(field: str, expected: str) -> ManifestError:
        return ManifestError(
            f"{source}: {where}.{field}: expected {expected}, got {row.get(field)!r}"
        )

    for key in row:
        if key not in _FIELDS:
            raise ManifestError(f"{source}: {where}: unknown field {key!r}")
    key_hash = row.get("key_hash")
    if not isinstance(key_hash, str) or not _HASH_RE.fullmatch(key_hash):
        raise fail("key_hash", "the key's SHA-256 as 64 lowercase hex characters")

    def a_uuid(field: str, default: str | None = None) -> str:
        value = row.get(field, default)
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise fail(field, "a UUID") from None

    def a_list(field: str, normalize: Any, expected: str) -> tuple[str, ...]:
        """Each value in its one stored form (proxy/auth/key_fields.py), duplicates dropped."""
        value = row.get(field) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(field, expected)
        normal = [normalize(v) for v in value]
        if None in normal:
            raise fail(field, expected)
        return tuple(dict.fromkeys(normal))

    def a_limit(field: str, default: int) -> int | None:
        value = row.get(field, default)
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        raise fail(field, "a positive integer or null")

    def a_time(field: str) -> datetime | None:
        value = row.get(field)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise fail(field, "an ISO 8601 timestamp") from None
        if not isinstance(value, datetime):
            raise fail(field, "an ISO 8601 timestamp")
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    name = row.get("name", "")
    is_active = row.get("is_active", True)
    if not isinstance(is_active, bool):
        raise fail("is_active", "true or false")
    # A stable default id, so the same row always gets the same X-Api-Key-Id.
    default_id = str(uuid.uuid5(uuid.NAMESPACE_OID, key_hash))
    return ApiKeyRecord(
        id=a_uuid("id", default_id),
        module_id=a_uuid("module_id"),
        site_id=a_uuid("site_id"),
        agency_id=a_uuid("agency_id", str(uuid.UUID(int=0))),
        key_prefix=str(row.get("key_prefix") or "dmc_live_"),
        key_hash=key_hash,
        name=str(name),
        scopes=a_list("scopes", _scope, "a list of scope strings"),
        rate_limit_per_minute=a_limit("rate_limit_per_minute", 60),
        rate_limit_per_day=a_limit("rate_limit_per_day", 10000),
        allowed_ips=a_list("allowed_ips", normalize_network, "a list of IP addresses or CIDRs"),
        allowed_origins=a_list("allowed_origins", normalize_origin, "a list of origins"),
        is_active=is_active,
        expires_at=a_time("expires_at"),
        revoked_at=a_time("revoked_at"),
    )


def _scope(text: str) -> str | None:
    return text if text and " " not in text else None
