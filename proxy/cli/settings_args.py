"""The settings flags every `modgate` command shares: `--config` and per-setting overrides,
read into one Settings (flags over MODGATE_* over the YAML file)."""

from __future__ import annotations

import argparse
import os
import sys

from proxy.errors import ConfigError
from proxy.settings import FIELDS, Settings, load_settings

_FIELDS = {field.name: field for field in FIELDS}


def add_settings_args(parser: argparse.ArgumentParser, *keys: str) -> None:
    """`--config`, and a flag for each of `keys` (settings names), described by the settings
    table: its flag, metavar, doc and environment variable."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="settings YAML (default: $MODGATE_CONFIG or config/gateway.yaml if present)",
    )
    for key in keys:
        field = _FIELDS[key]
        parser.add_argument(
            field.flag, dest=key, metavar=field.metavar, help=f"{field.doc} ({field.env_var})"
        )


def settings_from_args(args: argparse.Namespace, *keys: str) -> Settings:
    """The settings, with the flags of `keys` that were given; warnings go to stderr."""
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    settings = load_settings(args.config, os.environ, overrides)
    for warning in settings.warnings:
        print(f"modgate: warning: {warning}", file=sys.stderr)
    return settings


def required_database_url(settings: Settings) -> str:
    """database_url, for the commands that work on Postgres; ConfigError when unset."""
    if not settings.database_url:
        raise ConfigError(
            "database_url: required for this command (set MODGATE_DATABASE_URL or --database-url)"
        )
    return settings.database_url
