"""`api_keys` rows of the embedded manifest, validated into ApiKeyRecords.

The rows use the `module_api_keys` column names, and their values follow the rules every key
source shares (proxy/auth/key_fields.py), so a key reads the same from the manifest as from
Postgres. Only `key_hash` is accepted, never the key itself: the file is configuration and
may be read by anyone who can read the deployment.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from proxy.auth import key_fields
from proxy.auth.api_keys import KEY_PREFIX, ApiKeyRecord
from proxy.auth.key_fields import InvalidKeyField
from proxy.errors import ManifestError

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_NO_AGENCY = str(uuid.UUID(int=0))
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
    """One record a row; ManifestError names the file, the row and the field."""
    records = []
    for i, row in enumerate(rows):
        where = f"{source}: api_keys[{i}]"
        for key in row:
            if key not in _FIELDS:
                raise ManifestError(f"{where}: unknown field {key!r}")
        try:
            records.append(_record(row))
        except InvalidKeyField as exc:
            raise ManifestError(f"{where}.{exc.field}: {exc.reason}") from None
    return records


def _record(row: Mapping[str, Any]) -> ApiKeyRecord:
    key_hash = row.get("key_hash")
    if not isinstance(key_hash, str) or not _HASH_RE.fullmatch(key_hash):
        raise InvalidKeyField(
            "key_hash",
            f"expected the key's SHA-256 as 64 lowercase hex characters, got {key_hash!r}",
        )
    # A stable default id, so the same row always gets the same X-Api-Key-Id.
    default_id = str(uuid.uuid5(uuid.NAMESPACE_OID, key_hash))
    name = row.get("name")  # optional in a manifest (`keys create` requires one)
    is_active = row.get("is_active", True)
    if not isinstance(is_active, bool):
        raise InvalidKeyField("is_active", f"expected true or false, got {is_active!r}")
    return ApiKeyRecord(
        id=key_fields.parse_uuid(row.get("id", default_id), "id"),
        module_id=key_fields.parse_uuid(row.get("module_id"), "module_id"),
        site_id=key_fields.parse_uuid(row.get("site_id"), "site_id"),
        agency_id=key_fields.parse_uuid(row.get("agency_id", _NO_AGENCY), "agency_id"),
        key_prefix=str(row.get("key_prefix") or KEY_PREFIX),
        key_hash=key_hash,
        name="" if name in (None, "") else key_fields.parse_name(str(name)),
        scopes=key_fields.parse_scopes(row.get("scopes")),
        rate_limit_per_minute=key_fields.parse_rate_limit(
            row.get("rate_limit_per_minute", key_fields.DEFAULT_RATE_LIMIT_PER_MINUTE),
            "rate_limit_per_minute",
        ),
        rate_limit_per_day=key_fields.parse_rate_limit(
            row.get("rate_limit_per_day", key_fields.DEFAULT_RATE_LIMIT_PER_DAY),
            "rate_limit_per_day",
        ),
        allowed_ips=key_fields.parse_networks(row.get("allowed_ips")),
        allowed_origins=key_fields.parse_origins(row.get("allowed_origins")),
        is_active=is_active,
        expires_at=_time(row, "expires_at"),
        revoked_at=_time(row, "revoked_at"),
    )


def _time(row: Mapping[str, Any], field: str) -> datetime | None:
    """An aware datetime; one written without a zone is taken as UTC."""
    written = row.get(field)
    value = written
    if isinstance(written, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(written)
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidKeyField(field, f"expected an ISO 8601 timestamp, got {written!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)
