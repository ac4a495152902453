"""What `modgate keys` and `modgate consumers` share: the `list` action and the limit flags,
running on one connection with store errors named by flags, number and list flags read as
text, and what each action prints.

Strategy: numbers are taken as text and checked here, every other value by the store (the
rules of proxy/auth/key_fields.py), so a bad value yields one `modgate: error: --flag: ...`
line rather than argparse's usage dump; store errors name parameters, which each command's
`flags` table maps back to its flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from proxy.auth.key_fields import (
    DEFAULT_RATE_LIMIT_PER_DAY,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    InvalidKeyField,
)
from proxy.cli.database import run_on_connection
from proxy.cli.settings_args import required_database_url, settings_from_args
from proxy.errors import ConfigError

T = TypeVar("T")

EXIT_NOT_FOUND = 1


# -- flags ----------------------------------------------------------------------------------


def add_list_action(actions: Any, plural: str, description: str, func: Callable[..., int]) -> Any:
    """The `list` action: --module, --site, --all and --json, said of `plural` ("keys")."""
    listing = actions.add_parser(
        "list", help=f"list {plural} (prefix, never the key or its hash)", description=description
    )
    listing.add_argument("--module", metavar="UUID", help=f"only this module's {plural}")
    listing.add_argument("--site", metavar="UUID", help=f"only this site's {plural}")
    listing.add_argument("--all", action="store_true", help=f"include revoked {plural}")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(func=func)
    return listing


def add_limit_args(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """--rate-limit-per-minute, --rate-limit-per-day and --allowed-ip, as `create` (`default`:
    the help names the defaults) or `update` (an absent flag leaves the value unchanged)."""
    for unit, fallback in (
        ("minute", DEFAULT_RATE_LIMIT_PER_MINUTE),
        ("day", DEFAULT_RATE_LIMIT_PER_DAY),
    ):
        parser.add_argument(
            f"--rate-limit-per-{unit}",
            metavar="N",
            help=f"requests per {unit}" + (f" (default {fallback})" if default else ""),
        )
    replaces = "" if default else "; replaces the current list"
    parser.add_argument(
        "--allowed-ip",
        action="append",
        metavar="IP_OR_CIDR",
        help=f"accept calls only from this address or network (repeatable; none = any{replaces})",
    )


# -- values ---------------------------------------------------------------------------------


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


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` without those of absent flags (None)."""
    return {name: value for name, value in values.items() if value is not None}


def require_changes(changes: Mapping[str, Any]) -> None:
    """`update` with no setting to change is bad usage."""
    if not changes:
        raise ConfigError("nothing to update: give at least one setting to change (see --help)")


# -- output ---------------------------------------------------------------------------------


def print_created(
    args: argparse.Namespace, noun: str, summary: Any, key: str, fields: Sequence[str]
) -> int:
    """`create`'s output: one JSON object (the key and `fields`) with --json, else the key
    and a warning that it is shown only once."""
    if args.json:
        print(orjson.dumps({"key": key, **{f: getattr(summary, f) for f in fields}}).decode())
        return 0
    print(f"created {noun} {summary.id} ({summary.key_prefix}) {summary.name!r}")
    print(f"key: {key}")
    print("This key is shown only once and cannot be shown again: store it now.")
    return 0


def print_listing(
    args: argparse.Namespace,
    summaries: Sequence[T],
    status: Callable[[T], str],
    *,
    none: str,
    header: Sequence[str],
    row: Callable[[T], Sequence[str]],
) -> int:
    """`list`'s output: with --json a list of each summary's fields and `status`, else `none`
    when there are no summaries, or a table of one `row` each under `header`."""
    if args.json:
        print(orjson.dumps([{**as_dict(s), "status": status(s)} for s in summaries]).decode())
    elif not summaries:
        print(none)
    else:
        print_table(header, [row(s) for s in summaries])
    return 0


def print_updated(summary: Any, settings: Mapping[str, str]) -> int:
    """`update`'s output: the id and prefix, then each setting as it now stands."""
    print(f"updated {summary.id} ({summary.key_prefix})")
    for name, text in settings.items():
        print(f"  {name}: {text}")
    return 0


def shown(summary: Any, fields: Sequence[str], empty: str = "-") -> dict[str, str]:
    """`fields` of `summary` as `show` prints them, by name."""
    return {field: show(getattr(summary, field), empty) for field in fields}


def not_found(message: str) -> int:
    """`modgate: error: <message>` on stderr; the exit code of a missing key or consumer."""
    print(f"modgate: error: {message}", file=sys.stderr)
    return EXIT_NOT_FOUND


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
