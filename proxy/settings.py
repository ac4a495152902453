"""The settings object: one frozen `Settings`, built once at start by `load_settings`.

Sources, later wins: built-in defaults < YAML file < `MODGATE_<KEY>` environment < CLI overrides.

Strategy: each setting is written once, as one attribute of `Settings` carrying its rule,
default and doc (`setting(...)`); `FIELDS`, `DEFAULTS`, the loader, the messages, the CLI's
setting flags and `describe_settings()` are read off that one table. Rules
(proxy/setting_rules.py) accept typed values (YAML, CLI) and strings (environment) alike, so
every source shares one parser, and a bad value fails with one line: `<key>: expected <what>,
got <value> (from <source>)`. Components get a per-subsystem view (`settings.upstream`,
`.database`, ...: proxy/settings_views.py), made once when the object is built.
Invariant: secrets in database_url / redis_url are masked in repr and in error messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from proxy.auth.key_fields import DEFAULT_RATE_LIMIT_PER_MINUTE
from proxy.errors import ConfigError
from proxy.redact import mask_url as mask_url
from proxy.setting_rules import (
    ADDRESS,
    BOOLEAN,
    NON_NEGATIVE,
    POSITIVE,
    Rule,
    choice,
    cidr,
    integer,
    key_bytes,
    list_of,
    origin,
    scope,
    text,
    url,
)
from proxy.setting_rules import parse_address as parse_address
from proxy.settings_views import (
    DatabaseSettings,
    FailurePolicy,
    KeyCacheSettings,
    ListenAddresses,
    RedisSettings,
    RequestLogSettings,
    UpstreamLimits,
    view,
)

ENV_PREFIX = "MODGATE_"
CONFIG_ENV = "MODGATE_CONFIG"
DEFAULT_CONFIG_PATH = "config/gateway.yaml"

Mode = Literal["gateway", "sidecar"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]

T = TypeVar("T")


def setting(rule: Rule, default: T, doc: str, *, metavar: str | None = None) -> T:
    """One row of the table: a `Settings` attribute with its rule, default and doc; `metavar`
    names the value in `--help` of the commands that take the setting as a flag."""
    metadata = {"rule": rule, "doc": doc, "metavar": metavar}
    return dataclasses.field(default=default, metadata=metadata)


def _view() -> Any:
    # Made in __post_init__ from the settings above: not a setting, not compared, not shown.
    return dataclasses.field(init=False, repr=False, compare=False)


# The prefixed views: attribute, class, and the prefix of the settings it regroups.
VIEWS: tuple[tuple[str, type[Any], str], ...] = (
    ("upstream", UpstreamLimits, "upstream_"),
    ("database", DatabaseSettings, "database_"),
    ("redis", RedisSettings, "redis_"),
    ("request_log", RequestLogSettings, "request_log_"),
    ("key_cache", KeyCacheSettings, "key_"),
)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Settings:
    """Validated gateway settings; build it with `load_settings`."""

    # fmt: off
    listen: str = setting(ADDRESS, "127.0.0.1:8080",
        "public port, host:port ([::]:8080 for all IPv6 interfaces; port 0 = any free)",
        metavar="HOST:PORT")
    admin_listen: str = setting(ADDRESS, "127.0.0.1:9090",
        "admin port (/metrics, /healthz, /readyz), host:port", metavar="HOST:PORT")
    mode: Mode = setting(choice("gateway", "sidecar"), "gateway",
        "gateway: /api/modules/{module_id}/{path}; sidecar: one module, every path",
        metavar="{gateway,sidecar}")
    sidecar_module: str | None = setting(text("a module id or name", optional=True), None,
        "the module a sidecar serves (id or name); required when mode is sidecar", metavar="ID")
    database_url: str | None = setting(url("postgres", "postgresql"), None,
        "Postgres DSN; set = routes and keys from Postgres, unset = from routes_file",
        metavar="URL")
    redis_url: str | None = setting(url("redis", "rediss", "unix"), None,
        "Redis URL; set = shared rate-limit buckets, unset = in-process buckets")
    routes_file: str = setting(text("a file path"), "config/routes.yaml",
        "routes manifest served when no database_url is set", metavar="PATH")
    routes_poll_seconds: float = setting(POSITIVE, 1.0,
        "how often the embedded mode checks routes_file for changes")
    workers: int = setting(integer(1), 1,
        "worker processes sharing the public port (SO_REUSEPORT)", metavar="N")
    max_body_bytes: int = setting(integer(0), 10_485_760,
        "largest request body accepted, larger ones get 413 (0 = unlimited)")
    client_header_timeout_seconds: float = setting(POSITIVE, 10.0,
        "seconds a client has to send a whole request head, from connection open or a keep-alive "
        "request's first byte; past it 408 and close")
    client_body_timeout_seconds: float = setting(POSITIVE, 60.0,
        "longest silence, in seconds, while a request body is being received; past it 408 and "
        "close")
    client_keepalive_seconds: float = setting(POSITIVE, 75.0,
        "seconds an idle client keep-alive connection is kept open")
    max_client_connections: int = setting(integer(1), 10_000,
        "open client connections per worker; past it a new one gets 503 and is closed")
    upstream_connect_timeout: float = setting(POSITIVE, 2.0,
        "seconds to open a connection to a module upstream")
    upstream_pool_wait_seconds: float = setting(POSITIVE, 2.0,
        "seconds a request waits for a free upstream connection at the pool's limit")
    upstream_timeout: float = setting(POSITIVE, 30.0,
        "seconds for a whole upstream request; past it the client gets 504")
    upstream_max_connections: int = setting(integer(1), 1000,
        "keep-alive pool size of each worker process, all upstreams together")
    upstream_keepalive_seconds: float = setting(POSITIVE, 30.0,
        "seconds an idle upstream connection is kept open")
    shutdown_grace_seconds: float = setting(NON_NEGATIVE, 15.0,
        "seconds in-flight requests get to finish on SIGTERM")
    database_pool_size: int = setting(integer(1), 2,
        "Postgres connections in each worker process's pool")
    database_timeout: float = setting(POSITIVE, 5.0,
        "seconds per route or key query")
    database_reconnect_max_seconds: float = setting(POSITIVE, 10.0,
        "cap of the LISTEN reconnect backoff")
    trusted_proxies: tuple[str, ...] = setting(
        list_of(cidr, "a list of CIDRs (e.g. 10.0.0.0/8)"), (),
        "peers whose X-Forwarded-For is believed for the client address (none)")
    jwt_secret: str | None = setting(text("a secret", optional=True), None,
        "HS256 shared secret for Bearer JWTs")
    jwt_public_key: str | None = setting(text("PEM text or a file path", optional=True), None,
        "RS256/ES256 public key for Bearer JWTs: the PEM text or a path to it")
    jwks_url: str | None = setting(url("http", "https"), None,
        "JWKS endpoint for RS256/ES256 JWTs (keys chosen by kid)")
    jwt_issuer: str | None = setting(text("an issuer", optional=True), None,
        "required iss claim (unset = not checked)")
    jwt_audience: str | None = setting(text("an audience", optional=True), None,
        "required aud claim (unset = not checked)")
    jwt_leeway_seconds: float = setting(NON_NEGATIVE, 30.0,
        "clock skew allowed on exp, nbf and iat")
    jwt_site_claim: str = setting(text("a claim name"), "site_id",
        "claim that names the caller's site")
    jwt_default_scopes: tuple[str, ...] = setting(list_of(scope, "a list of scopes"), (),
        "scopes every valid JWT gets on top of its own (none: only what it carries)")
    jwks_refresh_seconds: float = setting(POSITIVE, 30.0,
        "least time between JWKS fetches caused by an unknown kid")
    key_cache_size: int = setting(integer(1), 100_000,
        "API-key records kept in memory per worker (least recently used evicted)")
    key_negative_ttl_seconds: float = setting(NON_NEGATIVE, 60.0,
        "how long an unknown key hash is remembered as unknown")
    key_lookup_budget_per_second: float = setting(POSITIVE, 50.0,
        "Postgres key lookups per second per worker while the key index is not loaded")
    usage_flush_seconds: float = setting(POSITIVE, 5.0,
        "how often key usage (last_used_at, request_count) is written, batched")
    secrets_key: str | None = setting(key_bytes(32), None,
        "AES-256-GCM key (32 bytes, base64) that encrypts API consumers' signing secrets; "
        "unset = no consumer can have one", metavar="BASE64")
    cors_origins: tuple[str, ...] = setting(
        list_of(origin, "a list of origins (https://app.example, *)"), (),
        "origins allowed to call from browsers; preflights answered by the gateway")
    cors_max_age_seconds: int = setting(integer(0), 600,
        "how long browsers may cache a preflight answer")
    cors_allow_credentials: bool = setting(BOOLEAN, False,
        "send Access-Control-Allow-Credentials: true to allowed origins (cookies)")
    rate_limit_enabled: bool = setting(BOOLEAN, True,
        "enforce rate limits and daily quotas (false: e.g. a sidecar behind a gateway)")
    default_rate_limit_per_minute: int = setting(integer(1), DEFAULT_RATE_LIMIT_PER_MINUTE,
        "per-minute limit for callers and routes that set none (JWT users, anonymous)")
    default_rate_limit_per_day: int = setting(integer(0), 0,
        "daily quota for callers whose key sets none (0 = no quota)")
    redis_timeout_seconds: float = setting(POSITIVE, 0.25,
        "budget of one Redis rate-limit call, from queued to answered (connections are opened "
        "ahead); past it the failure policy decides that request")
    redis_failure_policy: FailurePolicy = setting(
        choice("local", "open", "closed"), "local",
        "when Redis fails: local (in-process buckets), open (admit), closed (503)")
    rate_limit_replicas: int = setting(integer(1), 1,
        "gateway replicas; the local fallback gives each worker process limit / (replicas x "
        "workers)")
    redis_circuit_failures: int = setting(integer(1), 3,
        "consecutive Redis failures that open the circuit (no more calls until a probe)")
    redis_circuit_window_seconds: float = setting(NON_NEGATIVE, 0.5,
        "least time those consecutive failures must span to open the circuit (a burst, such as "
        "one slow reply failing every call in flight, opens nothing)")
    redis_circuit_cooldown_seconds: float = setting(POSITIVE, 1.0,
        "how often an open circuit lets one call probe Redis")
    local_buckets_max: int = setting(integer(1), 100_000,
        "in-process buckets kept, with Redis the mirror the local fallback continues from (least "
        "recently used evicted)")
    access_log: bool = setting(BOOLEAN, True,
        "one JSON line per request on stdout (request id, module, route, status, ...)")
    request_log_enabled: bool = setting(BOOLEAN, True,
        "write every request to module_api_logs (Postgres mode), in batches")
    request_log_queue_size: int = setting(integer(1), 100_000,
        "request log rows held in memory, queued or kept while Postgres is down (100 s at 1,000 "
        "req/s); past it rows are dropped and counted")
    request_log_queue_bytes: int = setting(integer(1), 64 * 1024 * 1024,
        "memory those rows may hold (estimated); past it rows are dropped and counted")
    request_log_flush_seconds: float = setting(POSITIVE, 0.25,
        "how often queued request log rows are written")
    request_log_batch_rows: int = setting(integer(1), 1000,
        "rows per write; a full batch is written at once")
    log_retention_days: int = setting(integer(0), 0,
        "delete module_api_logs rows older than this, hourly (0 = keep; see logs prune)")
    executor_url: str | None = setting(url("http", "https"), None,
        "the handler pool (modgate executor) for function routes; unset = 501")
    executor_token: str | None = setting(text("a secret", optional=True), None,
        "shared secret the gateway sends and the executor requires (unset: none)")
    executor_listen: str = setting(ADDRESS, "127.0.0.1:8090",
        "where `modgate executor` listens (its /metrics, /healthz, /readyz too)",
        metavar="HOST:PORT")
    executor_workers: int | None = setting(integer(1, optional=True), None,
        "executor worker processes, each with its own V8 isolates (unset: one per CPU the "
        "process may use: affinity, bounded by a cgroup CPU limit)", metavar="N")
    executor_timeout_seconds: float = setting(POSITIVE, 5.0,
        "time limit of one handler call from its arrival, waiting for a slot included; past it "
        "the call is stopped (504)")
    executor_memory_mb: int = setting(integer(8), 64,
        "heap cap of each isolate; a handler past it is stopped (500)")
    executor_concurrency: int = setting(integer(1), 32,
        "handler calls in progress per executor worker")
    executor_module_concurrency: int = setting(integer(1), 2,
        "handler calls of one module in progress per executor worker; more wait (503 module_busy "
        "once the queue is full or at the deadline)")
    executor_queue_size: int = setting(integer(0), 256,
        "calls waiting per executor worker; past it the executor answers 503")
    executor_max_isolates: int = setting(integer(1), 64,
        "isolates per executor worker, one per (module, site), least recently used go")
    executor_max_response_bytes: int = setting(integer(1), 10_485_760,
        "largest handler pool answer the gateway reads; past it the client gets 502")
    log_level: LogLevel = setting(choice("debug", "info", "warning", "error"), "info",
        "least severe level logged: debug, info, warning or error (any case accepted)",
        metavar="LEVEL")
    log_format: LogFormat = setting(choice("text", "json"), "text",
        "text for people, json for log collectors")
    # fmt: on
    warnings: tuple[str, ...] = ()  # ignored MODGATE_* variables, for the caller to log

    listen_addresses: ListenAddresses = _view()
    upstream: UpstreamLimits = _view()
    database: DatabaseSettings = _view()
    redis: RedisSettings = _view()
    request_log: RequestLogSettings = _view()
    key_cache: KeyCacheSettings = _view()

    def __post_init__(self) -> None:
        # listen / admin_listen stay the text the operator wrote (what errors and logs show);
        # the views, with the parsed addresses, are made here once (Settings is frozen).
        object.__setattr__(self, "listen_addresses", ListenAddresses.of(self))
        for name, cls, prefix in VIEWS:
            object.__setattr__(self, name, view(cls, self, prefix))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The setting keys, in table order (`warnings` and the views are not settings)."""
        return tuple(field.name for field in FIELDS)

    def __repr__(self) -> str:
        parts = [f"{name}={_shown(getattr(self, name), name)!r}" for name in self.field_names()]
        parts.append(f"warnings={self.warnings!r}")
        return f"Settings({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class SettingField:
    """One row of the settings table, read off a `Settings` attribute."""

    name: str
    rule: Rule
    default: object
    doc: str
    metavar: str | None = None  # argparse's default (the name in capitals) when None

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


FIELDS: tuple[SettingField, ...] = tuple(
    SettingField(
        field.name,
        field.metadata["rule"],
        field.default,
        field.metadata["doc"],
        field.metadata["metavar"],
    )
    for field in dataclasses.fields(Settings)
    if "rule" in field.metadata
)

# Never printed: repr and error messages show *** instead.
SECRET_FIELDS = frozenset({"jwt_secret", "executor_token", "secrets_key"})

_BY_NAME: Mapping[str, SettingField] = {field.name: field for field in FIELDS}
_BY_ENV: Mapping[str, SettingField] = {field.env_var: field for field in FIELDS}
DEFAULTS: Mapping[str, object] = MappingProxyType({f.name: f.default for f in FIELDS})


def cannot_listen(settings: Settings, name: str, exc: OSError) -> str:
    """A failed bind as the operator fixes it: the address, and the setting `name` (listen,
    admin_listen, executor_listen) with its variable and flag."""
    field = _BY_NAME[name]
    # asyncio's text repeats the address ("error while attempting to bind on address ...").
    reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)
    return (
        f"cannot listen on {getattr(settings, name)} "
        f"({name}: {field.env_var} or {field.flag}): {reason}"
    )


def _shown(value: object, name: str = "") -> object:
    if name in SECRET_FIELDS and value:
        return "***"
    return mask_url(value) if isinstance(value, str) else value


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Merge defaults, the YAML file, MODGATE_* variables and overrides; ConfigError if bad.

    `environ` defaults to os.environ. In `overrides` (CLI flags) a None value means "flag not
    given" and is skipped; an empty string unsets an optional setting, as in the environment.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = dict(DEFAULTS)

    explicit = config_path if config_path is not None else env.get(CONFIG_ENV) or None
    path = os.fspath(explicit) if explicit is not None else DEFAULT_CONFIG_PATH
    for key, raw in _read_config_file(path, required=explicit is not None).items():
        field = _BY_NAME.get(key) if isinstance(key, str) else None
        if field is None:
            raise ConfigError(f"unknown setting '{key}' in {path}{_suggest(key, _BY_NAME)}")
        values[field.name] = _parse(field, raw, path)

    # Unknown variables are only warned about: the environment is shared with other programs
    # (and with tests' MODGATE_TEST_*), but a typo must not pass silently.
    warnings: list[str] = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        field = _BY_ENV.get(var)
        if field is None:
            hint = _suggest(var, [*_BY_ENV, CONFIG_ENV], prefix=ENV_PREFIX, quote="")
            warnings.append(f"ignoring unknown environment variable {var}{hint}")
        else:
            values[field.name] = _parse(field, env[var], var)

    for key, raw in (overrides or {}).items():
        field = _BY_NAME.get(key)
        if field is None:
            raise ConfigError(f"unknown setting '{key}' in overrides{_suggest(key, _BY_NAME)}")
        if raw is not None:
            values[key] = _parse(field, raw, field.flag)

    # Cross-field rules: checked on the merged result, so they carry no single source.
    if values["mode"] == "sidecar" and values["sidecar_module"] is None:
        raise ConfigError("sidecar_module: required when mode is sidecar")
    return Settings(**values, warnings=tuple(warnings))


def _parse(field: SettingField, raw: object, source: str) -> object:
    rule = field.rule
    if rule.optional and (raw is None or (isinstance(raw, str) and not raw.strip())):
        return None
    try:
        return rule.parse(raw)
    except (ValueError, TypeError):
        # masked: a mistyped DSN still carries a real password
        got = repr(_shown(raw, field.name))
        message = f"{field.name}: expected {rule.expected}, got {got} (from {source})"
        raise ConfigError(message) from None


def _suggest(word: object, candidates: Iterable[str], *, prefix: str = "", quote: str = "'") -> str:
    # The shared prefix is left out of the comparison, or every MODGATE_* name looks close.
    stems = [candidate.removeprefix(prefix) for candidate in candidates]
    close = difflib.get_close_matches(str(word).removeprefix(prefix), stems, n=1)
    return f" (did you mean {quote}{prefix}{close[0]}{quote}?)" if close else ""


def _read_config_file(path: str, *, required: bool) -> Mapping[object, object]:
    """The file's top-level mapping; {} when the implicit default file does not exist."""
    # Here, not at the top: importing settings (e.g. for --help) stays cheap.
    from proxy.yaml_text import InvalidYaml, parse_yaml

    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file '{path}' not found") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"config file '{path}': cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}': not UTF-8 text") from None
    try:
        data = parse_yaml(text)
    except InvalidYaml as exc:
        raise ConfigError(f"config file '{path}': {exc}") from None
    if not isinstance(data, Mapping | None):
        raise ConfigError(f"config file '{path}': expected a mapping of settings at the top level")
    return data or {}


def describe_settings() -> str:
    """Help text listing every key, its environment variable, default and meaning."""
    lines = [
        "settings (YAML key in --config, default config/gateway.yaml; environment variable;",
        "default). Later wins: defaults < file < MODGATE_* < command-line flags.",
    ]
    for field in FIELDS:
        default = "unset" if field.default is None else field.default
        lines.append(f"  {field.name}  ({field.env_var}, default: {default})")
        lines.append(f"      {field.doc}")
    return "\n".join(lines)
