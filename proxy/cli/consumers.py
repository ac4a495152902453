"""`modgate consumers create|list|update|revoke`: API consumers (EM-33) in Postgres.

`modgate keys`'s twin (proxy/cli/keys.py), for `module_api_consumers`: the key (`dk_...`) is
printed once, by `create`, and stored nowhere; every other output shows the prefix (its first
12 characters) and never the hash. `create --with-secret` also prints a signing secret once
(stored AES-GCM sealed under `secrets_key`, which it then needs: proxy/auth/secret_box.py).
Exit codes are those of `modgate`: 0 success, 1 Postgres failed or the consumer does not exist,
2 bad usage or a bad value (one line naming the flag).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import orjson

from proxy.auth.key_fields import CONSUMER_SCOPES
from proxy.auth.secret_box import NO_SECRETS_KEY, SecretBox
from proxy.cli.credentials import (
    add_limit_args,
    add_list_action,
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
    with_connection,
)
from proxy.cli.settings_args import add_settings_args, settings_from_args
from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.store.consumers import ConsumerSummary

_FLAGS = {
    "module_id": "--module",
    "site_id": "--site",
    "name": "--name",
    "description": "--description",
    "scopes": "--scope",
    "allowed_endpoints": "--allowed-endpoint",
    "rate_limit_per_minute": "--rate-limit-per-minute",
    "rate_limit_per_day": "--rate-limit-per-day",
    "allowed_ips": "--allowed-ip",
    "require_signature": "--require-signature",
    "consumer_id": "CONSUMER_ID",
}
_SCOPES = ", ".join(CONSUMER_SCOPES)
_LIST_HEADER = ("ID", "PREFIX", "NAME", "SITE", "SCOPES", "ENDPOINTS", "STATUS", "LAST REQUEST",
                "REQUESTS")  # fmt: skip
# What `update` prints of a consumer, then allowed_ips ("any" when empty) and the status.
_UPDATE_SHOWN = ("name", "description", "scopes", "allowed_endpoints", "rate_limit_per_minute",
                 "rate_limit_per_day", "require_signature")  # fmt: skip


def add_consumers_commands(sub: Any) -> None:
    """Register `consumers` and its actions on `modgate`'s subparsers."""
    consumers = sub.add_parser(
        "consumers",
        help="create, list, update and revoke API consumers in Postgres",
        description="Manage API consumers (module_api_consumers): applications that call one "
        "module's API for one site with a dk_ key. Gateways pick changes up through NOTIFY. "
        "Exit codes: 0 ok, 1 no such consumer or Postgres failed, 2 bad usage.",
    )
    actions = consumers.add_subparsers(dest="consumers_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="create a consumer and print its key once",
        description="Create an API consumer of one module for one site. Its key is printed "
        "once and cannot be shown again: only its prefix and SHA-256 hash are stored.",
    )
    create.add_argument("--module", required=True, metavar="UUID", help="module id")
    create.add_argument("--site", required=True, metavar="UUID", help="site id")
    create.add_argument("--name", required=True, metavar="TEXT", help="a name for people")
    create.add_argument("--description", metavar="TEXT", help="what the consumer is")
    create.add_argument(
        "--with-secret",
        action="store_true",
        help="also make a signing secret for HTTP Message Signatures, printed once (needs "
        "secrets_key: MODGATE_SECRETS_KEY)",
    )
    create.add_argument(
        "--require-signature",
        action="store_true",
        help="refuse (401) this consumer's requests unless signed (needs --with-secret)",
    )
    _grant_args(create, default=True)
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=cmd_create)

    listing = add_list_action(
        actions,
        "consumers",
        "List consumers, newest first. Revoked ones are hidden unless --all.",
        cmd_list,
    )

    revoke = actions.add_parser(
        "revoke",
        help="revoke a consumer (exit 1 if there is no active consumer with this id)",
        description="Deactivate a consumer: its key stops working on every gateway. Revoking "
        "a revoked or unknown consumer changes nothing and exits 1.",
    )
    revoke.add_argument("consumer_id", metavar="CONSUMER_ID", help="see `consumers list`")
    revoke.set_defaults(func=cmd_revoke)

    update = actions.add_parser(
        "update",
        help="change a consumer's name, scopes, endpoints, limits or IP restrictions",
        description="Change only the given settings; list flags replace the whole list. "
        "Exit 1 if there is no consumer with this id.",
    )
    update.add_argument("consumer_id", metavar="CONSUMER_ID", help="see `consumers list`")
    update.add_argument("--name", metavar="TEXT", help="a new name")
    update.add_argument("--description", metavar="TEXT", help="a new description")
    update.add_argument("--clear-description", action="store_true", help="remove it")
    _grant_args(update, default=False)
    update.add_argument(
        "--clear-allowed-ips", action="store_true", help="remove all IP restrictions"
    )
    update.add_argument(
        "--require-signature",
        action=argparse.BooleanOptionalAction,
        help="refuse (401) this consumer's requests unless signed, or no longer",
    )
    update.set_defaults(func=cmd_update)

    for parser in (create, listing, revoke, update):
        add_settings_args(parser, "database_url")


def _grant_args(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """The flags `create` and `update` share; `update` leaves an absent one unchanged."""
    replaces = "" if default else "; replaces the current list"
    parser.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help=f"{_SCOPES}: read, write and delete grant read:*, write:* and delete:* on the "
        f"module, admin grants everything (repeatable{replaces}"
        + ("; default read)" if default else ")"),
    )
    parser.add_argument(
        "--allowed-endpoint",
        action="append",
        metavar="ENDPOINT",
        help="'*' or 'METHOD /path' ('GET /products/:id', '* /orders') the consumer may call "
        f"(repeatable{replaces}" + ("; default '*')" if default else ")"),
    )
    add_limit_args(parser, default=default)


def cmd_create(args: argparse.Namespace) -> int:
    from proxy.store.consumers import create_consumer

    grants = given(
        {"scopes": args.scope, "allowed_endpoints": args.allowed_endpoint, **rate_limits(args)}
    )  # absent: the defaults

    box = None
    if args.with_secret:
        box = SecretBox.from_setting(settings_from_args(args, "database_url").secrets_key)
        if box is None:
            raise ConfigError(NO_SECRETS_KEY)
    elif args.require_signature:
        raise ConfigError("--require-signature needs --with-secret (or nothing could sign)")
    summary, key, secret = with_connection(
        args,
        lambda conn: create_consumer(
            conn,
            module_id=args.module,
            site_id=args.site,
            name=args.name,
            description=args.description,
            allowed_ips=args.allowed_ip or (),
            secrets=box,
            require_signature=args.require_signature,
            **grants,
        ),
        _FLAGS,
    )
    fields = (
        "id", "key_prefix", "name", "description", "module_id", "site_id", "scopes",
        "allowed_endpoints", "rate_limit_per_minute", "rate_limit_per_day", "allowed_ips",
        "is_active", "require_signature", "created_at",
    )  # fmt: skip
    if secret is None:
        return print_created(args, "consumer", summary, key, fields)
    if args.json:
        shown_once = {"key": key, "secret": secret, **{f: getattr(summary, f) for f in fields}}
        print(orjson.dumps(shown_once).decode())
        return 0
    print(f"created consumer {summary.id} ({summary.key_prefix}) {summary.name!r}")
    print(f"key: {key}")
    print(f"secret: {secret}")
    print("The key and the secret are shown only once and cannot be shown again: store them now.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from proxy.store.consumers import list_consumers

    summaries = with_connection(
        args,
        lambda conn: list_consumers(
            conn, module_id=args.module, site_id=args.site, include_inactive=args.all
        ),
        _FLAGS,
    )
    return print_listing(
        args,
        summaries,
        _status,
        none="no consumers",
        header=_LIST_HEADER,
        row=lambda s: (
            s.id,
            s.key_prefix,
            s.name,
            s.site_id,
            ",".join(s.scopes) or "-",
            ",".join(s.allowed_endpoints) or "-",
            _status(s),
            when(s.last_request_at, "never"),
            str(s.total_requests),
        ),
    )


def cmd_revoke(args: argparse.Namespace) -> int:
    from proxy.store.consumers import revoke_consumer

    summary = with_connection(args, lambda conn: revoke_consumer(conn, args.consumer_id), _FLAGS)
    if summary is None:
        return not_found(f"no active consumer {args.consumer_id}")
    print(f"revoked {summary.id} ({summary.key_prefix})")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from proxy.store.consumers import update_consumer

    changes = given(
        {
            "name": args.name,
            **rate_limits(args),
            "scopes": args.scope,
            "allowed_endpoints": args.allowed_endpoint,
            "allowed_ips": replacement(args.allowed_ip, args.clear_allowed_ips, "--allowed-ip"),
            "require_signature": args.require_signature,
        }
    )
    if args.description is not None and args.clear_description:
        raise ConfigError("--description and --clear-description exclude each other")
    if args.description is not None or args.clear_description:
        changes["description"] = args.description
    require_changes(changes)

    summary = with_connection(
        args, lambda conn: update_consumer(conn, args.consumer_id, **changes), _FLAGS
    )
    if summary is None:
        return not_found(f"no consumer {args.consumer_id}")
    settings = {
        **shown(summary, _UPDATE_SHOWN),
        **shown(summary, ("allowed_ips",), empty="any"),
        "status": _status(summary),
    }
    return print_updated(summary, settings)


def _status(summary: ConsumerSummary) -> str:
    return "active" if summary.is_active else "revoked"
