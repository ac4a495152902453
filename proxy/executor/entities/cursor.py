"""The keyset cursor of a list: `pagination.next_cursor`, given back as `?cursor=`.

Opaque to clients, readable by anyone who decodes it (it is not a secret, and it is never
trusted: its values are bind parameters, typed by Postgres, under the caller's own site):
base64url, unpadded, of the JSON `[sort value, id, page, fingerprint]`. The values are the
last row's sort column and id as Postgres's text (`::text`), so a numeric or timestamp comes
back exact. `page` is the page the cursor leads to (so `pagination.page` stays meaningful), and
`fingerprint` hashes what the rows were chosen and ordered by (entity, sort, order, search,
filters): a cursor used with other ones is refused instead of skipping or repeating rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

MAX_CURSOR_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Cursor:
    sort_value: str | None  # None: the last row's sort column was NULL
    id: str
    page: int
    fingerprint: str


def fingerprint(selection: Any) -> str:
    """A short hash of a JSON-able description of a list's sort and filters."""
    return hashlib.blake2b(orjson.dumps(selection), digest_size=8).hexdigest()


def encode(key_json: str, page: int, fingerprint: str) -> str:
    """The cursor after a row whose `[sort, id]` Postgres rendered as `key_json`."""
    sort_value, row_id = orjson.loads(key_json)
    raw = orjson.dumps([sort_value, row_id, page, fingerprint])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str) -> Cursor:
    """The cursor `token` spells, or ValueError."""
    if not token or len(token) > MAX_CURSOR_LENGTH:
        raise ValueError("cursor is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("cursor is not one this endpoint made") from exc
    if not (
        isinstance(value, list)
        and len(value) == 4
        and (value[0] is None or isinstance(value[0], str))
        and isinstance(value[1], str)
        and type(value[2]) is int
        and 1 < value[2] <= 10**9
        and isinstance(value[3], str)
    ):
        raise ValueError("cursor is not one this endpoint made")
    return Cursor(value[0], value[1], value[2], value[3])
