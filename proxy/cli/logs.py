"""`modgate logs prune`: delete old request log rows (module_api_logs) from the command line.

For a cron job, or once by hand; a gateway with `log_retention_days` set prunes hourly by
itself. Exit codes are those of `modgate`: 0 success, 1 Postgres failed, 2 bad usage (one line
naming the flag).
"""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import Any, Final

from proxy.cli.database import run_on_connection
from proxy.cli.settings_args import add_settings_args, required_database_url, settings_from_args
from proxy.errors import ConfigError

MAX_DAYS: Final = 36_500  # 100 years: NOW() minus more is near the edge of timestamptz
_SECONDS_PER: Final = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"([0-9]{1,12})([dhms])")
_DURATION_HELP = "a whole number and a unit: 30d, 12h, 90m or 3600s"


def add_logs_commands(sub: Any) -> None:
    """Register `logs` and its actions on `modgate`'s subparsers."""
    logs = sub.add_parser(
        "logs",
        help="maintain the request log (module_api_logs)",
        description="Maintain module_api_logs, the table gateways write every request to.",
    )
    actions = logs.add_subparsers(dest="logs_command", metavar="ACTION", required=True)
    prune = actions.add_parser(
        "prune",
        help="delete request log rows older than a given age",
        description="Delete module_api_logs rows whose created_at is older than the given "
        "age, in batches of 10,000 rows (short transactions, no long lock), and print how "
        "many were deleted. Without --older-than, log_retention_days from the settings is "
        "used. Gateways with log_retention_days > 0 do this hourly by themselves. "
        "Exit codes: 0 ok, 1 Postgres failed, 2 bad usage.",
    )
    prune.add_argument(
        "--older-than",
        metavar="AGE",
        help=f"delete rows older than this: {_DURATION_HELP} (default: log_retention_days)",
    )
    add_settings_args(prune, "database_url")
    prune.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from proxy.store.logs import prune_logs

    # The flag first: a bad value is reported whatever the configuration says.
    label = None if args.older_than is None else args.older_than.strip()
    older_than = None if label is None else parse_duration(label, "--older-than")
    settings = settings_from_args(args, "database_url")
    if older_than is None:
        if settings.log_retention_days <= 0:
            raise ConfigError(
                "--older-than: required (log_retention_days is 0, which keeps every row)"
            )
        label = f"{settings.log_retention_days}d"
        older_than = timedelta(days=settings.log_retention_days)
    dsn = required_database_url(settings)
    deleted = run_on_connection(dsn, lambda conn: prune_logs(conn, older_than))
    print(f"deleted {deleted} request log rows older than {label}")
    return 0


def parse_duration(text: str, flag: str) -> timedelta:
    """'30d', '12h', '90m' or '3600s' as a timedelta; ConfigError naming `flag` otherwise."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{flag}: expected {_DURATION_HELP}, got {text!r}")
    seconds = int(match.group(1)) * _SECONDS_PER[match.group(2)]
    if seconds == 0:
        raise ConfigError(f"{flag}: must be more than 0 (0 would delete every row), got {text!r}")
    if seconds > MAX_DAYS * 86_400:
        raise ConfigError(f"{flag}: at most {MAX_DAYS}d, got {text!r}")
    return timedelta(seconds=seconds)
