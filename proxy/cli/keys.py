"""`modgate keys create|list|revoke|update`: API keys in Postgres, from the command line.

The key itself is printed once, by `create`, and is stored nowhere; every other output shows
the prefix (its first 12 characters) and never the hash. Exit codes are those of `modgate`:
0 success, 1 Postgres failed or the key does not exist, 2 bad usage or a bad value (one line
naming the flag).

Flags are read as `modgate consumers` reads its own (proxy/cli/credentials.py); store errors
name parameters, which `_FLAGS` maps back to flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from proxy.auth.key_fields import MAX_EXPIRES_IN_DAYS, InvalidKeyField, parse_whole_number
from proxy.cli.credentials import (
    add_limit_args,
    add_list_action,
    flag_error,
    given,
    not_found,
    print_created,
    print_listing,
    print_updated,
    rate_limits,
    replacement,
    require_changes,
    shown,
    when,
    whole_number,
    with_connection,
)
from proxy.cli.settings_args import add_settings_args
from proxy.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from proxy.store.keys import KeySummary

T = TypeVar("T")

_FLAGS = {
    "module_id": "--module",
    "site_id": "--site",
    "agency_id": "--agency",
    "name": "--name",
    "scopes": "--scope",
    "expires_in_days": "--expires-in-days",
    "expires_at": "--expires-in-days",
    "rate_limit_per_minute": "--rate-limit-per-minute",
    "rate_limit_per_day": "--rate-limit-per-day",
    "allowed_ips": "--allowed-ip",
    "allowed_origins": "--allowed-origin",
    "created_by": "--created-by",
    "revoked_by": "--by",
    "key_id": "KEY_ID",
}

_NO_SCOPES_HELP = (
    "; a key without scopes can call only routes that require none (unlike the seed, there "
    "is no default '*')"
)


def add_keys_commands(sub: Any) -> None:
    """Register `keys` and its actions on `modgate`'s subparsers."""
    keys = sub.add_parser(
        "keys",
        help="create, list, revoke and update API keys in Postgres",
        description="Manage module API keys (module_api_keys). Gateways pick changes up "
        "through NOTIFY. Exit codes: 0 ok, 1 no such key or Postgres failed, 2 bad usage.",
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="create a key and print it once",
        description="Create an API key for one module and site. The key is printed once and "
        "cannot be shown again: only its prefix and SHA-256 hash are stored.",
    )
    create.add_argument("--module", required=True, metavar="UUID", help="module id")
    create.add_argument("--site", required=True, metavar="UUID", help="site id")
    create.add_argument("--agency", required=True, metavar="UUID", help="agency id")
    create.add_argument("--name", required=True, metavar="TEXT", help="a name for people")
    _limit_args(create, default=True)
    create.add_argument("--created-by", metavar="UUID", help="user id recorded as creator")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=cmd_create)

    listing = add_list_action(
        actions, "keys", "List keys, newest first. Revoked keys are hidden unless --all.", cmd_list
    )

    revoke = actions.add_parser(
        "revoke",
        help="revoke a key (exit 1 if there is no unrevoked key with this id)",
        description="Deactivate a key and record when and by whom. Revoking a revoked or "
        "unknown key changes nothing and exits 1.",
    )
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (see `keys list`)")
    revoke.add_argument("--by", metavar="UUID", help="user id recorded as revoker")
    revoke.set_defaults(func=cmd_revoke)

    update = actions.add_parser(
        "update",
        help="change a key's name, scopes, limits, restrictions or expiry",
        description="Change only the given settings; list flags replace the whole list. "
        "Exit 1 if there is no key with this id.",
    )
    update.add_argument("key_id", metavar="KEY_ID", help="the key's id (see `keys list`)")
    update.add_argument("--name", metavar="TEXT", help="a new name")
    _limit_args(update, default=False)
    for flag, what in (
        ("scopes", "scopes"),
        ("allowed-ips", "IP restrictions (any address may call)"),
        ("allowed-origins", "origin restrictions (any origin may call)"),
    ):
        update.add_argument(f"--clear-{flag}", action="store_true", help=f"remove all {what}")
    update.add_argument("--no-expiry", action="store_true", help="make the key never expire")
    update.set_defaults(func=cmd_update)

    for parser in (create, listing, revoke, update):
        add_settings_args(parser, "database_url")


def _limit_args(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """The flags `create` and `update` share; `update` leaves an absent one unchanged."""
    replaces = "" if default else "; replaces the current list"
    parser.add_argument(
        "--scope",
        action="append",
        metavar="S",
        help=f"a scope the key grants (repeatable{replaces}){_NO_SCOPES_HELP}",
    )
    parser.add_argument(
        "--expires-in-days",
        metavar="N",
        help="expire N days from now" + ("" if default else " (replaces the expiry)"),
    )
    add_limit_args(parser, default=default)
    parser.add_argument(
        "--allowed-origin",
        action="append",
        metavar="ORIGIN",
        help=f"'*' or scheme://host[:port] a browser may call from (repeatable; none = any"
        f"{replaces})",
    )


def cmd_create(args: argparse.Namespace) -> int:
    from proxy.store.keys import create_key, get_key

    limits = rate_limits(args)
    expires_in_days = whole_number(args.expires_in_days, "--expires-in-days")

    async def create(conn: Any) -> tuple[KeySummary, str]:
        record, key = await create_key(
            conn,
            module_id=args.module,
            site_id=args.site,
            agency_id=args.agency,
            name=args.name,
            scopes=args.scope or (),
            expires_in_days=expires_in_days,
            allowed_ips=args.allowed_ip or (),
            allowed_origins=args.allowed_origin or (),
            created_by=args.created_by,
            **given(limits),  # absent: the defaults
        )
        return _read_back(await get_key(conn, record.id)), key

    summary, key = _with_connection(args, create)
    fields = ("id", "key_prefix", "name", "module_id", "site_id", "scopes", "expires_at",
              "created_at")  # fmt: skip
    return print_created(args, "key", summary, key, fields)


def cmd_list(args: argparse.Namespace) -> int:
    from proxy.store.keys import list_keys

    summaries = _with_connection(
        args,
        lambda conn: list_keys(
            conn, module_id=args.module, site_id=args.site, include_revoked=args.all
        ),
    )
    now = datetime.now(UTC)
    return print_listing(
        args,
        summaries,
        lambda s: s.status(now),
        none="no keys",
        header=("ID", "PREFIX", "NAME", "SCOPES", "STATUS", "LAST USED", "REQUESTS"),
        row=lambda s: (
            s.id,
            s.key_prefix,
            s.name,
            ",".join(s.scopes) or "-",
            s.status(now),
            when(s.last_used_at, "never"),
            str(s.request_count),
        ),
    )


def cmd_revoke(args: argparse.Namespace) -> int:
    from proxy.store.keys import get_key, revoke_key

    async def revoke(conn: Any) -> KeySummary | None:
        if not await revoke_key(conn, args.key_id, revoked_by=args.by):
            return None
        return await get_key(conn, args.key_id)

    summary = _with_connection(args, revoke)
    if summary is None:
        return not_found(f"no active key {args.key_id}")
    print(f"revoked {summary.id} ({summary.key_prefix})")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from proxy.store.keys import UNSET, get_key, update_key

    changes = given(
        {
            "name": args.name,
            **rate_limits(args),
            "scopes": replacement(args.scope, args.clear_scopes, "--scope"),
            "allowed_ips": replacement(args.allowed_ip, args.clear_allowed_ips, "--allowed-ip"),
            "allowed_origins": replacement(
                args.allowed_origin, args.clear_allowed_origins, "--allowed-origin"
            ),
        }
    )
    days = whole_number(args.expires_in_days, "--expires-in-days")
    if days is not None and args.no_expiry:
        raise ConfigError("--expires-in-days and --no-expiry exclude each other")
    if days is not None:
        changes["expires_at"] = _expiry(days)
    elif args.no_expiry:
        changes["expires_at"] = None
    require_changes(changes)
    changes.setdefault("expires_at", UNSET)

    async def update(conn: Any) -> KeySummary | None:
        record = await update_key(conn, args.key_id, **changes)
        return None if record is None else _read_back(await get_key(conn, record.id))

    summary = _with_connection(args, update)
    if summary is None:
        return not_found(f"no key {args.key_id}")
    settings = {
        **shown(summary, ("name", "scopes", "rate_limit_per_minute", "rate_limit_per_day")),
        **shown(summary, ("allowed_ips", "allowed_origins"), empty="any"),
        "expires_at": when(summary.expires_at, "never"),
        "status": summary.status(datetime.now(UTC)),
    }
    return print_updated(summary, settings)


# -- helpers --------------------------------------------------------------------------------


def _with_connection(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    return with_connection(args, work, _FLAGS)


def _flag_error(exc: InvalidKeyField) -> ConfigError:
    return flag_error(exc, _FLAGS)


def _read_back(summary: KeySummary | None) -> KeySummary:
    """A key read back right after writing it; gone only if someone deleted it in between."""
    if summary is None:
        raise StoreError("the key was deleted while being written; run `keys list`")
    return summary


def _expiry(days: int) -> datetime:
    """`--expires-in-days` as the moment `update` stores (`create` sends the days)."""
    try:
        parse_whole_number(days, "expires_in_days", MAX_EXPIRES_IN_DAYS)
    except InvalidKeyField as exc:
        raise _flag_error(exc) from None
    return datetime.now(UTC) + timedelta(days=days)
