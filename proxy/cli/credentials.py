"""What `modgate keys` and `modgate consumers` share: running on one connection with store
errors named by flags, number and list flags read as text, and how values and tables print.

Strategy: numbers are taken as text and checked here, every other value by the store (the
rules of proxy/auth/key_fields.py), so a bad value yields one `modgate: error: --flag: ...`
line rather than argparse's usage dump; store errors name parameters, which each command's
`flags` table maps back to its flags.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from proxy.auth.key_fields import InvalidKeyField
from proxy.cli.database import run_on_connection
from proxy.cli.settings_args import required_database_url, settings_from_args
from proxy.errors import ConfigError

T = TypeVar("T")

EXIT_NOT_FOUND = 1


def with_connection(
    args: argparse.Namespace, work: Callable[[Any], Awaitable[T]], flags: Mapping[str, str]
) -> T:
    """Run `work` on one connection to the configured database; store errors name flags."""
    dsn = required_database_url(settings_from_args(args, "database_url"))
    try:
        return run_on_connection(dsn, work)
    except InvalidKeyField as exc:
        raise flag_error(exc, flags) from None


def flag_error(exc: InvalidKeyField, flags: Mapping[str, str]) -> ConfigError:
    """The rule's own text (proxy/auth/key_fields.py), named by the flag that gave the value."""
    return ConfigError(f"{flags.get(exc.field, exc.field)}: {exc.reason}")


def whole_number(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag}: expected a whole number, got {text!r}") from None


def rate_limits(args: argparse.Namespace) -> dict[str, int | None]:
    """--rate-limit-per-minute and --rate-limit-per-day as numbers (None: not given)."""
    return {
        "rate_limit_per_minute": whole_number(
            args.rate_limit_per_minute, "--rate-limit-per-minute"
        ),
        "rate_limit_per_day": whole_number(args.rate_limit_per_day, "--rate-limit-per-day"),
    }


def replacement(values: list[str] | None, clear: bool, flag: str) -> list[str] | None:
    """A list flag of `update`: None (unchanged), the new list, or [] for --clear-<flag>s."""
    if values and clear:
        raise ConfigError(f"{flag} and --clear-{flag[2:]}s exclude each other")
    return [] if clear else values


def as_dict(summary: Any) -> dict[str, Any]:
    return {field.name: getattr(summary, field.name) for field in dataclasses.fields(summary)}


def when(moment: datetime | None, absent: str) -> str:
    return absent if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def show(value: Any, empty: str = "-") -> str:
    if isinstance(value, tuple):
        return printable(", ".join(value)) or empty
    return "-" if value is None else printable(str(value))


def printable(text: str) -> str:
    """`text` with each non-printable character escaped as Python writes it (ESC becomes the
    four characters `\\x1b`): the stores refuse control characters in names, but a row written
    by hand may hold them, and a terminal would act on them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks; cells with
    non-printable characters escaped (`printable`)."""
    table = [tuple(header), *(tuple(map(printable, row)) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
