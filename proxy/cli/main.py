"""`modgate`: serve the gateway, migrate the schema, apply route manifests.

Exit codes: 0 success, 1 a dependency failed (e.g. Postgres unreachable), 2 bad usage,
configuration or manifest (the message names the key or field).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from proxy import __version__
from proxy.cli.consumers import add_consumers_commands
from proxy.cli.database import run_on_connection
from proxy.cli.keys import add_keys_commands
from proxy.cli.logs import add_logs_commands
from proxy.cli.settings_args import add_settings_args, required_database_url, settings_from_args
from proxy.errors import ConfigError, StoreError
from proxy.exit_codes import EXIT_DEPENDENCY, EXIT_FATAL
from proxy.routing.manifest import Manifest, load_manifest
from proxy.settings import DEFAULTS, describe_settings

_SERVE_KEYS = (
    "listen",
    "admin_listen",
    "workers",
    "routes_file",
    "database_url",
    "mode",
    "sidecar_module",
    "log_level",
)
_EXECUTOR_KEYS = ("executor_listen", "executor_workers", "database_url", "log_level")


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, *_SERVE_KEYS)
    if settings.workers == 1:
        from proxy.server.worker import run_worker

        return run_worker(settings)
    from proxy.observability.logging import configure_logging
    from proxy.server.supervisor import Supervisor

    configure_logging(settings.log_level, settings.log_format)
    return Supervisor(settings).run()


def cmd_executor(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, *_EXECUTOR_KEYS)
    from proxy.executor.cpus import usable_cpus
    from proxy.executor.worker import executor_worker_main, run_executor

    workers = settings.executor_workers or usable_cpus()
    if workers == 1:
        return run_executor(settings)
    from proxy.observability.logging import configure_logging
    from proxy.server.supervisor import Supervisor

    configure_logging(settings.log_level, settings.log_format)
    return Supervisor(settings, target=executor_worker_main, count=workers).run()


def cmd_migrate(args: argparse.Namespace) -> int:
    from proxy.store.migrate import migrate

    dsn = required_database_url(settings_from_args(args, "database_url"))
    applied = asyncio.run(migrate(dsn))
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("schema is up to date")
    return 0


def _checked_manifest(path: str, *, listen: str | None) -> Manifest:
    """Parse and compile every module, so a bad manifest never reaches the database.
    `listen`: what `{listen}` stands for; None refuses it (rows in Postgres have no own port)."""
    from proxy.executor.sandbox import HandlerError, Sandbox
    from proxy.routing.table import compile_module

    manifest = load_manifest(path, listen=listen)
    errors: list[str] = []
    for module in manifest.modules:
        try:
            compile_module(module)
        except ConfigError as exc:
            errors.append(str(exc))
        for route in module.routes:
            if route.handler_type != "function" or route.handler_code is None:
                continue
            try:
                Sandbox.check(route.handler_code)  # a syntax error is refused here, not at call
            except HandlerError as exc:
                errors.append(
                    f"module {module.name or module.id}: {route.method} {route.path}: "
                    f"handler_code does not compile: {exc.message}"
                )
    if errors:
        raise ConfigError(f"{path}: " + "; ".join(errors))
    return manifest


def cmd_routes_check(args: argparse.Namespace) -> int:
    # A manifest for the embedded mode may route to `{listen}`; any address checks it.
    manifest = _checked_manifest(args.file, listen=str(DEFAULTS["listen"]))
    routes = sum(len(m.routes) for m in manifest.modules)
    entities = sum(len(m.entities) for m in manifest.modules)
    listed = f", {entities} entities" if entities else ""
    print(f"{args.file}: {len(manifest.modules)} modules, {routes} routes{listed}, no conflicts")
    return 0


def cmd_routes_apply(args: argparse.Namespace) -> int:
    manifest = _checked_manifest(args.file, listen=None)
    from proxy.store.routes import apply_manifest

    dsn = required_database_url(settings_from_args(args, "database_url"))
    with_entities = {m.id for m in manifest.modules if m.entities}
    for r in run_on_connection(dsn, lambda conn: apply_manifest(conn, manifest)):
        line = f"module {r.module_id}: {r.upserted} routes upserted, {r.deactivated} deactivated"
        if r.module_id in with_entities or r.entities_removed:
            line += f", {r.entities_upserted} entities upserted, {r.entities_removed} removed"
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modgate",
        description="API gateway and sidecar reverse proxy for module services.",
    )
    parser.add_argument("--version", action="version", version=f"modgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. With no database_url it serves the routes file "
        "(embedded mode: no Postgres, no Redis needed).",
        epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_args(serve, *_SERVE_KEYS)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser(
        "migrate",
        help="create or upgrade the Postgres schema (idempotent)",
        description="Apply pending schema migrations; re-running is a no-op.",
    )
    add_settings_args(migrate, "database_url")
    migrate.set_defaults(func=cmd_migrate)

    executor = sub.add_parser(
        "executor",
        help="run the handler pool for function routes",
        description="Run the handler pool: JS handlers of function routes in V8 isolates, one per "
        "module and site, with a time limit and a heap cap per call, and ctx.db limited to the "
        "module's tables and the caller's site. Gateways reach it at executor_url.",
        epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_args(executor, *_EXECUTOR_KEYS)
    executor.set_defaults(func=cmd_executor)

    routes = sub.add_parser("routes", help="register module routes from a YAML manifest")
    routes_sub = routes.add_subparsers(dest="routes_command", metavar="ACTION", required=True)
    apply = routes_sub.add_parser(
        "apply",
        help="upsert a manifest's routes and entities into Postgres",
        description="Upsert every module's routes and entities from the manifest in one "
        "transaction; a module's routes missing from the manifest are deactivated, its entities "
        "missing from it removed. Each entity's table and fields are checked against the "
        "database first. Gateways pick the change up through NOTIFY.",
    )
    apply.add_argument("-f", "--file", required=True, metavar="FILE", help="manifest YAML")
    add_settings_args(apply, "database_url")
    apply.set_defaults(func=cmd_routes_apply)
    check = routes_sub.add_parser(
        "check",
        help="validate and compile a manifest without touching any database",
    )
    check.add_argument("-f", "--file", required=True, metavar="FILE", help="manifest YAML")
    check.set_defaults(func=cmd_routes_check)
    add_keys_commands(sub)
    add_consumers_commands(sub)
    add_logs_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
    except ConfigError as exc:
        print(f"modgate: error: {exc}", file=sys.stderr)
        code = EXIT_FATAL
    except StoreError as exc:
        print(f"modgate: error: {exc}", file=sys.stderr)
        code = EXIT_DEPENDENCY
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
