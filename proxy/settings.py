"""The settings object: one frozen `Settings`, built once at start by `load_settings`.

Sources, later wins: built-in defaults < YAML file < `MODGATE_<KEY>` environment < CLI overrides.

Strategy: each setting is one row of `FIELDS` (name, rule, default, doc) and the loader, the
messages, `DEFAULTS` and `describe_settings()` are driven by that table. Rules accept typed
values (YAML, CLI) and strings (environment) alike, so every source shares one parser, and a
bad value fails with one line: `<key>: expected <what>, got <value> (from <source>)`.
Invariant: secrets in database_url / redis_url are masked in repr and in error messages.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from proxy.auth.key_fields import normalize_origin
from proxy.errors import ConfigError

ENV_PREFIX = "MODGATE_"
CONFIG_ENV = "MODGATE_CONFIG"
DEFAULT_CONFIG_PATH = "config/gateway.yaml"

Mode = Literal["gateway", "sidecar"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class Rule:
    """How one setting is parsed: `parse` returns the typed value or raises ValueError/TypeError."""

    parse: Callable[[object], object]
    expected: str  # completes "expected ..." in the error message
    optional: bool = False  # None or "" means unset (None)


@dataclass(frozen=True, slots=True)
class SettingField:
    """One row of the settings table."""

    name: str
    rule: Rule
    default: object
    doc: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# -- parsers. Strings are accepted everywhere because the environment only has strings and
# YAML users quote numbers; bools are refused where a number is wanted (True is an int).

# A host name or IPv4 address; IPv6 must be bracketed so the port separator is unambiguous.
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")


def parse_address(text: str) -> tuple[str, int]:
    """Split "host:port" ("[::1]:8080" for IPv6) into (host, port); ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not _PORT_RE.fullmatch(port) or int(port) > 65535:  # 0 = ephemeral
        raise ValueError(text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError
    elif not _HOST_RE.fullmatch(host):
        raise ValueError(text)
    return host, int(port)


def _parse_address(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    parse_address(value.strip())
    return value.strip()  # kept as written; Settings derives host and port from it


def _integer(minimum: int, *, optional: bool = False) -> Rule:
    def parse(value: object) -> int:
        if isinstance(value, str):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(value)
        return value

    return Rule(parse, f"an integer >= {minimum}", optional=optional)


def _number(minimum: float, *, inclusive: bool) -> Rule:
    def parse(value: object) -> float:
        if isinstance(value, str):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(value)
        number = float(value)
        if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
            raise ValueError(value)
        return number

    return Rule(parse, f"a number {'>=' if inclusive else '>'} {minimum:g}")


def _choice(*options: str) -> Rule:
    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise ValueError(value)

    return Rule(parse, "one of " + ", ".join(options))


def _url(*schemes: str, optional: bool = True) -> Rule:
    prefixes = tuple(f"{scheme}://" for scheme in schemes)

    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip().lower().startswith(prefixes):
            return value.strip()
        raise ValueError(value)

    listed = ", ".join(prefixes[:-1]) + " or " + prefixes[-1]
    return Rule(parse, f"a {listed} URL", optional=optional)


def _text(expected: str, *, optional: bool = False) -> Rule:
    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise ValueError(value)

    return Rule(parse, expected, optional=optional)


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _parse_bool(value: object) -> bool:
    # str(True) == "True", so YAML bools, YAML 1/0 and the environment's words all go through
    # the same table.
    if isinstance(value, int | str) and (word := str(value).strip().lower()) in _BOOL_WORDS:
        return _BOOL_WORDS[word]
    raise ValueError(value)


def _list(item: Callable[[str], str], expected: str) -> Rule:
    """A list from YAML, or comma-separated text from the environment; stored as a tuple."""

    def parse(value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise TypeError(value)
        out = []
        for raw in items:
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError(value)
            out.append(item(raw.strip()))
        return tuple(out)

    return Rule(parse, expected)


def _cidr(text: str) -> str:
    return str(ipaddress.ip_network(text, strict=False))  # ValueError when malformed


def _origin(text: str) -> str:
    # The form browsers send in Origin (proxy/auth/key_fields.py): compared as strings.
    normal = normalize_origin(text)
    if normal is None or not (normal == "*" or normal.startswith(("http://", "https://"))):
        raise ValueError(text)
    return normal


def _scope(text: str) -> str:
    if " " in text:
        raise ValueError(text)
    return text


_ADDRESS = Rule(_parse_address, "host:port (e.g. 127.0.0.1:8080)")
_BOOLEAN = Rule(_parse_bool, "true or false")

# fmt: off
FIELDS: tuple[SettingField, ...] = (
    SettingField("listen", _ADDRESS, "127.0.0.1:8080",
                 "public port, host:port ([::]:8080 for all IPv6 interfaces; port 0 = any free)"),
    SettingField("admin_listen", _ADDRESS, "127.0.0.1:9090",
                 "admin port (/metrics, /healthz, /readyz), host:port"),
    SettingField("mode", _choice("gateway", "sidecar"), "gateway",
                 "gateway: /api/modules/{module_id}/{path}; sidecar: one module, every path"),
    SettingField("sidecar_module", _text("a module id or name", optional=True), None,
                 "the module a sidecar serves (id or name); required when mode is sidecar"),
    SettingField("database_url", _url("postgres", "postgresql"), None,
                 "Postgres DSN; set = routes and keys from Postgres, unset = from routes_file"),
    SettingField("redis_url", _url("redis", "rediss", "unix"), None,
                 "Redis URL; set = shared rate-limit buckets, unset = in-process buckets"),
    SettingField("routes_file", _text("a file path"), "config/routes.yaml",
                 "routes manifest served when no database_url is set"),
    SettingField("routes_poll_seconds", _number(0, inclusive=False), 1.0,
                 "how often the embedded mode checks routes_file for changes"),
    SettingField("workers", _integer(1), 1,
                 "worker processes sharing the public port (SO_REUSEPORT)"),
    SettingField("max_body_bytes", _integer(0), 10_485_760,
                 "largest request body accepted, larger ones get 413 (0 = unlimited)"),
    SettingField("client_header_timeout_seconds", _number(0, inclusive=False), 10.0,
                 "seconds a client has to send a whole request head, from connection open or a"
                 " keep-alive request's first byte; past it 408 and close"),
    SettingField("client_body_timeout_seconds", _number(0, inclusive=False), 60.0,
                 "longest silence, in seconds, while a request body is being received; past it"
                 " 408 and close"),
    SettingField("client_keepalive_seconds", _number(0, inclusive=False), 75.0,
                 "seconds an idle client keep-alive connection is kept open"),
    SettingField("max_client_connections", _integer(1), 10_000,
                 "open client connections per worker; past it a new one gets 503 and is closed"),
    SettingField("upstream_connect_timeout", _number(0, inclusive=False), 2.0,
                 "seconds to open a connection to a module upstream"),
    SettingField("upstream_pool_wait_seconds", _number(0, inclusive=False), 2.0,
                 "seconds a request waits for a free upstream connection at the pool's limit"),
    SettingField("upstream_timeout", _number(0, inclusive=False), 30.0,
                 "seconds for a whole upstream request; past it the client gets 504"),
    SettingField("upstream_max_connections", _integer(1), 1000,
                 "keep-alive pool size of each worker process, all upstreams together"),
    SettingField("upstream_keepalive_seconds", _number(0, inclusive=False), 30.0,
                 "seconds an idle upstream connection is kept open"),
    SettingField("shutdown_grace_seconds", _number(0, inclusive=True), 15.0,
                 "seconds in-flight requests get to finish on SIGTERM"),
    SettingField("database_pool_size", _integer(1), 2,
                 "Postgres connections in each worker process's pool"),
    SettingField("database_timeout", _number(0, inclusive=False), 5.0,
                 "seconds per route or key query"),
    SettingField("database_reconnect_max_seconds", _number(0, inclusive=False), 10.0,
                 "cap of the LISTEN reconnect backoff"),
    SettingField("trusted_proxies", _list(_cidr, "a list of CIDRs (e.g. 10.0.0.0/8)"), (),
                 "peers whose X-Forwarded-For is believed for the client address (none)"),
    SettingField("jwt_secret", _text("a secret", optional=True), None,
                 "HS256 shared secret for Bearer JWTs"),
    SettingField("jwt_public_key", _text("PEM text or a file path", optional=True), None,
                 "RS256/ES256 public key for Bearer JWTs: the PEM text or a path to it"),
    SettingField("jwks_url", _url("http", "https"), None,
                 "JWKS endpoint for RS256/ES256 JWTs (keys chosen by kid)"),
    SettingField("jwt_issuer", _text("an issuer", optional=True), None,
                 "required iss claim (unset = not checked)"),
    SettingField("jwt_audience", _text("an audience", optional=True), None,
                 "required aud claim (unset = not checked)"),
    SettingField("jwt_leeway_seconds", _number(0, inclusive=True), 30.0,
                 "clock skew allowed on exp, nbf and iat"),
    SettingField("jwt_site_claim", _text("a claim name"), "site_id",
                 "claim that names the caller's site"),
    SettingField("jwt_default_scopes", _list(_scope, "a list of scopes"), (),
                 "scopes every valid JWT gets on top of its own (none: only what it carries)"),
    SettingField("jwks_refresh_seconds", _number(0, inclusive=False), 30.0,
                 "least time between JWKS fetches caused by an unknown kid"),
    SettingField("key_cache_size", _integer(1), 100_000,
                 "API-key records kept in memory per worker (least recently used evicted)"),
    SettingField("key_negative_ttl_seconds", _number(0, inclusive=True), 60.0,
                 "how long an unknown key hash is remembered as unknown"),
    SettingField("key_lookup_budget_per_second", _number(0, inclusive=False), 50.0,
                 "Postgres key lookups per second per worker while the key index is not loaded"),
    SettingField("usage_flush_seconds", _number(0, inclusive=False), 5.0,
                 "how often key usage (last_used_at, request_count) is written, batched"),
    SettingField("cors_origins", _list(_origin, "a list of origins (https://app.example, *)"),
                 (), "origins allowed to call from browsers; preflights answered by the gateway"),
    SettingField("cors_max_age_seconds", _integer(0), 600,
                 "how long browsers may cache a preflight answer"),
    SettingField("cors_allow_credentials", _BOOLEAN, False,
                 "send Access-Control-Allow-Credentials: true to allowed origins (cookies)"),
    SettingField("rate_limit_enabled", _BOOLEAN, True,
                 "enforce rate limits and daily quotas (false: e.g. a sidecar behind a gateway)"),
    SettingField("default_rate_limit_per_minute", _integer(1), 60,
                 "per-minute limit for callers and routes that set none (JWT users, anonymous)"),
    SettingField("default_rate_limit_per_day", _integer(0), 0,
                 "daily quota for callers whose key sets none (0 = no quota)"),
    SettingField("redis_timeout_seconds", _number(0, inclusive=False), 0.25,
                 "budget of one Redis rate-limit call, from queued to answered (connections are"
                 " opened ahead); past it the failure policy decides that request"),
    SettingField("redis_failure_policy", _choice("local", "open", "closed"), "local",
                 "when Redis fails: local (in-process buckets), open (admit), closed (503)"),
    SettingField("rate_limit_replicas", _integer(1), 1,
                 "gateway replicas; the local fallback gives each worker process"
                 " limit / (replicas x workers)"),
    SettingField("redis_circuit_failures", _integer(1), 3,
                 "consecutive Redis failures that open the circuit (no more calls until a probe)"),
    SettingField("redis_circuit_window_seconds", _number(0, inclusive=True), 0.5,
                 "least time those consecutive failures must span to open the circuit (a burst,"
                 " such as one slow reply failing every call in flight, opens nothing)"),
    SettingField("redis_circuit_cooldown_seconds", _number(0, inclusive=False), 1.0,
                 "how often an open circuit lets one call probe Redis"),
    SettingField("local_buckets_max", _integer(1), 100_000,
                 "in-process buckets kept, with Redis the mirror the local fallback continues"
                 " from (least recently used evicted)"),
    SettingField("access_log", _BOOLEAN, True,
                 "one JSON line per request on stdout (request id, module, route, status, ...)"),
    SettingField("request_log_enabled", _BOOLEAN, True,
                 "write every request to module_api_logs (Postgres mode), in batches"),
    SettingField("request_log_queue_size", _integer(1), 100_000,
                 "request log rows held in memory, queued or kept while Postgres is down (100 s"
                 " at 1,000 req/s); past it rows are dropped and counted"),
    SettingField("request_log_queue_bytes", _integer(1), 64 * 1024 * 1024,
                 "memory those rows may hold (estimated); past it rows are dropped and counted"),
    SettingField("request_log_flush_seconds", _number(0, inclusive=False), 0.25,
                 "how often queued request log rows are written"),
    SettingField("request_log_batch_rows", _integer(1), 1000,
                 "rows per write; a full batch is written at once"),
    SettingField("log_retention_days", _integer(0), 0,
                 "delete module_api_logs rows older than this, hourly (0 = keep; see logs prune)"),
    SettingField("executor_url", _url("http", "https"), None,
                 "the handler pool (modgate executor) for function routes; unset = 501"),
    SettingField("executor_token", _text("a secret", optional=True), None,
                 "shared secret the gateway sends and the executor requires (unset: none)"),
    SettingField("executor_listen", _ADDRESS, "127.0.0.1:8090",
                 "where `modgate executor` listens (its /metrics, /healthz, /readyz too)"),
    SettingField("executor_workers", _integer(1, optional=True), None,
                 "executor worker processes, each with its own V8 isolates (unset: one per CPU"
                 " the process may use: affinity, bounded by a cgroup CPU limit)"),
    SettingField("executor_timeout_seconds", _number(0, inclusive=False), 5.0,
                 "time limit of one handler call from its arrival, waiting for a slot"
                 " included; past it the call is stopped (504)"),
    SettingField("executor_memory_mb", _integer(8), 64,
                 "heap cap of each isolate; a handler past it is stopped (500)"),
    SettingField("executor_concurrency", _integer(1), 32,
                 "handler calls in progress per executor worker"),
    SettingField("executor_module_concurrency", _integer(1), 2,
                 "handler calls of one module in progress per executor worker; more wait"
                 " (503 module_busy once the queue is full or at the deadline)"),
    SettingField("executor_queue_size", _integer(0), 256,
                 "calls waiting per executor worker; past it the executor answers 503"),
    SettingField("executor_max_isolates", _integer(1), 64,
                 "isolates per executor worker, one per (module, site), least recently used go"),
    SettingField("executor_max_response_bytes", _integer(1), 10_485_760,
                 "largest handler pool answer the gateway reads; past it the client gets 502"),
    SettingField("log_level", _choice("debug", "info", "warning", "error"), "info",
                 "least severe level logged (any case accepted)"),
    SettingField("log_format", _choice("text", "json"), "text",
                 "text for people, json for log collectors"),
)
# fmt: on

# Never printed: repr and error messages show *** instead.
SECRET_FIELDS = frozenset({"jwt_secret", "executor_token"})

_BY_NAME: Mapping[str, SettingField] = {field.name: field for field in FIELDS}
_BY_ENV: Mapping[str, SettingField] = {field.env_var: field for field in FIELDS}
DEFAULTS: Mapping[str, object] = MappingProxyType({f.name: f.default for f in FIELDS})


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Settings:
    """Validated gateway settings; build it with `load_settings`, one attribute per FIELDS row."""

    listen: str
    admin_listen: str
    mode: Mode
    sidecar_module: str | None
    database_url: str | None
    redis_url: str | None
    routes_file: str
    routes_poll_seconds: float
    workers: int
    max_body_bytes: int
    client_header_timeout_seconds: float
    client_body_timeout_seconds: float
    client_keepalive_seconds: float
    max_client_connections: int
    upstream_connect_timeout: float
    upstream_pool_wait_seconds: float
    upstream_timeout: float
    upstream_max_connections: int
    upstream_keepalive_seconds: float
    shutdown_grace_seconds: float
    database_pool_size: int
    database_timeout: float
    database_reconnect_max_seconds: float
    trusted_proxies: tuple[str, ...]
    jwt_secret: str | None
    jwt_public_key: str | None
    jwks_url: str | None
    jwt_issuer: str | None
    jwt_audience: str | None
    jwt_leeway_seconds: float
    jwt_site_claim: str
    jwt_default_scopes: tuple[str, ...]
    jwks_refresh_seconds: float
    key_cache_size: int
    key_negative_ttl_seconds: float
    key_lookup_budget_per_second: float
    usage_flush_seconds: float
    cors_origins: tuple[str, ...]
    cors_max_age_seconds: int
    cors_allow_credentials: bool
    rate_limit_enabled: bool
    default_rate_limit_per_minute: int
    default_rate_limit_per_day: int
    redis_timeout_seconds: float
    redis_failure_policy: Literal["local", "open", "closed"]
    rate_limit_replicas: int
    redis_circuit_failures: int
    redis_circuit_window_seconds: float
    redis_circuit_cooldown_seconds: float
    local_buckets_max: int
    access_log: bool
    request_log_enabled: bool
    request_log_queue_size: int
    request_log_queue_bytes: int
    request_log_flush_seconds: float
    request_log_batch_rows: int
    log_retention_days: int
    executor_url: str | None
    executor_token: str | None
    executor_listen: str
    executor_workers: int | None
    executor_timeout_seconds: float
    executor_memory_mb: int
    executor_concurrency: int
    executor_module_concurrency: int
    executor_queue_size: int
    executor_max_isolates: int
    executor_max_response_bytes: int
    log_level: LogLevel
    log_format: LogFormat
    warnings: tuple[str, ...] = ()  # ignored MODGATE_* variables, for the caller to log

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The setting keys, in table order (`warnings` is not a setting)."""
        return tuple(field.name for field in FIELDS)

    # listen / admin_listen stay the text the operator wrote (that is what errors and logs
    # show); host and port are derived. The host of "[::]:8080" is "::", ready for bind().
    @property
    def listen_host(self) -> str:
        return parse_address(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return parse_address(self.listen)[1]

    @property
    def admin_host(self) -> str:
        return parse_address(self.admin_listen)[0]

    @property
    def admin_port(self) -> int:
        return parse_address(self.admin_listen)[1]

    @property
    def executor_host(self) -> str:
        return parse_address(self.executor_listen)[0]

    @property
    def executor_port(self) -> int:
        return parse_address(self.executor_listen)[1]

    def __repr__(self) -> str:
        parts = [f"{name}={_shown(getattr(self, name), name)!r}" for name in self.field_names()]
        parts.append(f"warnings={self.warnings!r}")
        return f"Settings({', '.join(parts)})"


# user:password@ in the authority, and ?password= in the query (redis-py reads both).
_URL_PASSWORD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#]*@")
_QUERY_PASSWORD_RE = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Replace the password in a URL with ***: postgresql://user:***@host/db."""
    return _QUERY_PASSWORD_RE.sub(r"\1***", _URL_PASSWORD_RE.sub(r"\1:***@", url, count=1))


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
    import yaml  # here, not at the top: importing settings (e.g. for --help) stays cheap

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
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"config file '{path}': invalid YAML{where}: {problem}") from None
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
