"""The settings flags every `modgate` command shares: `--config` and per-setting overrides,
read into one Settings (flags over MODGATE_* over the YAML file)."""

from __future__ import annotations

import argparse
import os
import sys

from proxy.errors import ConfigError
from proxy.settings import Settings, load_settings

# metavar and help of each setting a command may take as a flag (--executor-listen...).
_FLAGS = {
    "listen": ("HOST:PORT", "public address (MODGATE_LISTEN)"),
    "admin_listen": ("HOST:PORT", "admin address for /metrics /healthz /readyz"),
    "workers": ("N", "worker processes sharing the port (MODGATE_WORKERS)"),
    "routes_file": ("PATH", "routes manifest for the embedded mode (MODGATE_ROUTES_FILE)"),
    "database_url": ("URL", "Postgres DSN; selects the Postgres mode (MODGATE_DATABASE_URL)"),
    "mode": ("{gateway,sidecar}", "gateway: /api/modules/{id}/...; sidecar: one module"),
    "sidecar_module": ("ID", "the module a sidecar serves on every path"),
    "log_level": ("LEVEL", "debug, info, warning or error"),
    "executor_listen": ("HOST:PORT", "where the executor listens (MODGATE_EXECUTOR_LISTEN)"),
    "executor_workers": (
        "N",
        "executor worker processes (MODGATE_EXECUTOR_WORKERS; default: one per usable CPU)",
    ),
}


def add_settings_args(parser: argparse.ArgumentParser, *keys: str) -> None:
    """`--config`, and a flag for each of `keys` (settings names)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="settings YAML (default: $MODGATE_CONFIG or config/gateway.yaml if present)",
    )
    for key in keys:
        metavar, help_text = _FLAGS[key]
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar=metavar, help=help_text)


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
