"""A create or update body, checked and reduced to the values that may be written.

As the seed's `filterInputFields`: only writable fields are written (schema.py: not readonly,
not hidden, never site_id, and not updated_at when an update sets it). The other fields the
entity declares (readonly, hidden) and `site_id` are dropped silently, so a client may send back
a row it read; a key that is no field of the entity is refused ("<key> is not a field of
<entity>"), so a typo is not lost. What is written is checked as the seed's `validateInput`
does, with the seed's messages: a required writable field missing (create, and PUT, which
replaces the row) is "<field> is required"; a value of the wrong type is "<field> must be of type
<type>". null clears a field that is not required; on a required one it is refused. A string
holding NUL (U+0000), anywhere in the value, is refused: Postgres cannot store it.
"""

from __future__ import annotations

from typing import Any, Literal

from proxy.errors import ValidationFailed
from proxy.executor.entities.schema import SITE, EntitySchema
from proxy.executor.entities.values import body_value_ok, has_nul

Mode = Literal["create", "replace", "patch"]


def writable_values(schema: EntitySchema, body: Any, mode: Mode) -> dict[str, Any]:
    """The fields to write, in the config's order, or ValidationFailed naming every problem."""
    if not isinstance(body, dict):
        raise ValidationFailed(["body must be a JSON object"])
    problems = [
        f"{str(key)[:64]} is not a field of {schema.name}"
        for key in body
        if key not in schema.fields and key != SITE
    ]
    values: dict[str, Any] = {}
    for name in schema.writable:
        field = schema.fields[name]
        if name not in body:
            if field.required and mode != "patch":
                problems.append(f"{name} is required")
            continue
        value = body[name]
        if value is None:
            if field.required:
                problems.append(f"{name} must not be null")
        elif not body_value_ok(value, field.type):
            problems.append(f"{name} must be of type {field.type}")
        elif has_nul(value):
            problems.append(f"{name} must not contain the NUL character (\\u0000)")
        values[name] = value
    if problems:
        raise ValidationFailed(problems)
    return values
