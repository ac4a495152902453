"""Values checked against their field's type, before any SQL: a JSON body's values (the seed's
`validateFieldType`, made strict where the seed let anything through: timestamps, decimals)
and a query string's values (text, so each type says which spellings it takes).

Checked values are bound as JSON and take their column's type in Postgres
(`jsonb_populate_record`, as `ctx.db` does); query values stay text (Postgres parses "12.50"
into a numeric column exactly, where a float would round). What Postgres still refuses (a
varchar too long, a constraint) comes back as a 400 naming the field or parameter (call.py).
A NUL character is refused here, in any string of any value: Postgres's text and jsonb cannot
hold one, and its error would name neither.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, Final

# Field types a value of which is one JSON scalar, compared and sorted as such.
SCALAR_TYPES: Final = frozenset(
    {"uuid", "string", "text", "integer", "number", "decimal", "boolean", "timestamp",
     "timestamptz"}
)  # fmt: skip
TEXT_TYPES: Final = frozenset({"string", "text"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
# What a query value of each scalar type must look like, for the message.
EXPECTED: Final = {
    "uuid": "a uuid",
    "string": "a string",
    "text": "a string",
    "integer": "an integer",
    "number": "a number",
    "decimal": "a number",
    "boolean": "true or false",
    "timestamp": "an ISO 8601 timestamp",
    "timestamptz": "an ISO 8601 timestamp",
}


def body_value_ok(value: Any, kind: str) -> bool:
    """Whether a non-null JSON value fits a field of type `kind`."""
    if kind == "uuid":
        return isinstance(value, str) and _UUID.fullmatch(value) is not None
    if kind in TEXT_TYPES:
        return isinstance(value, str)
    if kind == "integer":
        return type(value) is int and INT64_MIN <= value <= INT64_MAX
    if kind in ("number", "decimal"):
        if type(value) is int:
            return INT64_MIN <= value <= INT64_MAX
        if type(value) is float:
            return math.isfinite(value)
        return kind == "decimal" and isinstance(value, str) and _decimal(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("timestamp", "timestamptz"):
        return isinstance(value, str) and _timestamp(value)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return kind == "jsonb"  # any JSON


def query_value_ok(text: str, kind: str) -> bool:
    """Whether a query string's value spells a value of the scalar type `kind`."""
    if kind == "uuid":
        return _UUID.fullmatch(text) is not None
    if kind in TEXT_TYPES:
        return True
    if kind == "integer":
        return _INTEGER.fullmatch(text) is not None and INT64_MIN <= int(text) <= INT64_MAX
    if kind in ("number", "decimal"):
        return _decimal(text)
    if kind == "boolean":
        return text in ("true", "false")
    if kind in ("timestamp", "timestamptz"):
        return _timestamp(text)
    return False


# What Postgres's `::text` may render for a value that no client spells (a keyset cursor's).
_SPECIAL: Final = {
    "number": frozenset({"NaN", "Infinity", "-Infinity"}),
    "decimal": frozenset({"NaN", "Infinity", "-Infinity"}),
    "timestamp": frozenset({"infinity", "-infinity"}),
    "timestamptz": frozenset({"infinity", "-infinity"}),
}


def cursor_value_ok(text: str, kind: str) -> bool:
    """Whether a cursor's value (a column rendered by Postgres as text) fits a field of the
    scalar type `kind`: a query string's spellings, Postgres's own (`2026-11-30 07:58:09+00`
    is ISO 8601 to Python too) and its special values."""
    if kind not in SCALAR_TYPES:
        return False
    return "\x00" not in text and (query_value_ok(text, kind) or text in _SPECIAL.get(kind, ()))


def has_nul(value: Any) -> bool:
    """Whether a JSON value holds the NUL character in any string (keys included)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    return False


def _decimal(text: str) -> bool:
    return _DECIMAL.fullmatch(text) is not None


def _timestamp(text: str) -> bool:
    # Python's ISO 8601 reader (3.11: dates, times, offsets, "Z"); Postgres reads all of these.
    if not text or len(text) > 64:
        return False
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
