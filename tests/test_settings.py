"""Settings: sources and precedence, exact error messages, masking, warnings, the example file.

Every test passes `environ=` so the real environment (which may hold MODGATE_TEST_* for the
database tests) never leaks in.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy import settings as settings_module
from proxy.errors import ConfigError
from proxy.setting_rules import BOOLEAN
from proxy.settings import (
    DEFAULTS,
    FIELDS,
    VIEWS,
    Settings,
    describe_settings,
    load_settings,
)
from proxy.settings_views import Address, DatabaseSettings, ListenAddresses, UpstreamLimits

BAD_DIR = Path(__file__).parent / "settings_bad"
EXAMPLE = Path(__file__).parent.parent / "config" / "gateway.yaml"


def write_config(tmp_path: Path, data: object) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def error_of(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    return str(info.value)


# -- defaults and the table


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the implicit config/gateway.yaml does not exist here: fine
    settings = load_settings(environ={})
    assert {name: getattr(settings, name) for name in Settings.field_names()} == dict(DEFAULTS)
    assert settings.listen == "127.0.0.1:8080"
    assert settings.listen_addresses == ListenAddresses(
        public=Address("127.0.0.1", 8080),
        admin=Address("127.0.0.1", 9090),
        executor=Address("127.0.0.1", 8090),
    )
    assert settings.mode == "gateway"
    assert settings.database_url is None and settings.redis_url is None
    assert settings.workers == 1 and settings.max_body_bytes == 10_485_760
    assert settings.warnings == ()


def test_table_is_read_off_the_dataclass() -> None:
    # Every constructor argument but `warnings` is a row; the views are made, not passed.
    arguments = tuple(f.name for f in dataclasses.fields(Settings) if f.init)
    assert arguments == (*Settings.field_names(), "warnings")
    assert Settings.field_names() == tuple(DEFAULTS)
    assert Settings() == load_settings(config_path=str(EXAMPLE), environ={})


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_every_default_passes_its_own_rule(field: settings_module.SettingField) -> None:
    if field.default is None:
        assert field.rule.optional
    else:
        assert field.rule.parse(field.default) == field.default


def test_settings_is_frozen_with_slots() -> None:
    settings = load_settings(config_path=str(EXAMPLE), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = 2  # type: ignore[misc]
    assert not hasattr(settings, "__dict__")


# -- the per-subsystem views


def test_views_regroup_the_settings() -> None:
    settings = load_settings(
        config_path=str(EXAMPLE),
        environ={},
        overrides={
            "upstream_connect_timeout": 1.5,
            "upstream_pool_wait_seconds": 0.5,
            "workers": 4,
            "rate_limit_replicas": 3,
            "database_url": "postgresql://modgate:pw@db/platform",
            "redis_url": "redis://:pw@cache:6379/0",
        },
    )
    assert settings.upstream == UpstreamLimits(
        connect_timeout=1.5, pool_wait_seconds=0.5, timeout=30.0, max_connections=1000,
        keepalive_seconds=30.0,
    )  # fmt: skip
    assert settings.database == DatabaseSettings(
        url="postgresql://modgate:pw@db/platform", pool_size=2, timeout=5.0,
        reconnect_max_seconds=10.0,
    )  # fmt: skip
    assert settings.redis.url == "redis://:pw@cache:6379/0"
    assert settings.redis.failure_policy == "local" and settings.redis.timeout_seconds == 0.25
    assert settings.key_cache.cache_size == settings.key_cache_size == 100_000
    assert settings.request_log.batch_rows == settings.request_log_batch_rows == 1000
    # A URL may carry a password: the views leave it out of their repr.
    assert "pw" not in repr(settings.database) and "pw" not in repr(settings.redis)


@pytest.mark.parametrize(("name", "cls", "prefix"), VIEWS, ids=[row[0] for row in VIEWS])
def test_every_view_field_is_a_setting_of_the_same_type(name: str, cls: Any, prefix: str) -> None:
    # A view adds no names: its field x is the setting <prefix>x, typed alike.
    settings_types = typing.get_type_hints(Settings)
    view_types = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        assert prefix + field.name in DEFAULTS
        assert view_types[field.name] == settings_types[prefix + field.name], field.name
    assert settings_types[name] is cls


def test_views_follow_a_replaced_setting() -> None:
    settings = load_settings(config_path=str(EXAMPLE), environ={})
    changed = dataclasses.replace(settings, listen="[::1]:1234", upstream_timeout=9.0)
    assert changed.listen_addresses.public == Address("::1", 1234)
    assert changed.upstream.timeout == 9.0
    assert changed != settings


def test_settings_survive_pickling() -> None:
    # The supervisor hands them to each worker it spawns.
    settings = load_settings(config_path=str(EXAMPLE), environ={"MODGATE_WORKERS": "3"})
    copy = pickle.loads(pickle.dumps(settings))
    assert copy == settings
    assert copy.listen_addresses == settings.listen_addresses
    assert copy.upstream == settings.upstream


# -- sources and precedence


def test_file_values(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "listen": "0.0.0.0:8000",
            "workers": 4,
            "upstream_timeout": 12,  # an int where a float is wanted
            "max_body_bytes": "1024",  # lenient: a numeric string in YAML
            "log_level": "DEBUG",
            "database_url": "postgresql://modgate@db/platform",
        },
    )
    settings = load_settings(config_path=path, environ={})
    assert settings.listen_addresses.public == Address("0.0.0.0", 8000)
    assert settings.workers == 4
    assert settings.upstream_timeout == 12.0 and isinstance(settings.upstream_timeout, float)
    assert settings.max_body_bytes == 1024
    assert settings.log_level == "debug"
    assert settings.database_url == "postgresql://modgate@db/platform"
    assert settings.redis_url is None


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "# nothing set\n")
    assert load_settings(config_path=path, environ={}) == load_settings(
        config_path=str(EXAMPLE), environ={}
    )


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"workers": 4, "log_format": "json", "mode": "gateway"})
    env = {
        "MODGATE_WORKERS": "8",
        "MODGATE_UPSTREAM_TIMEOUT": "2.5",
        "MODGATE_MODE": "Sidecar",
        "MODGATE_SIDECAR_MODULE": "crm",
        "PATH": "/usr/bin",  # not ours: no warning
    }
    settings = load_settings(config_path=path, environ=env)
    assert settings.workers == 8
    assert settings.upstream_timeout == 2.5
    assert settings.log_format == "json"  # from the file, untouched by env
    assert settings.mode == "sidecar" and settings.sidecar_module == "crm"
    assert settings.warnings == ()


def test_empty_env_value_unsets_an_optional_setting(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"redis_url": "redis://cache:6379/0"})
    settings = load_settings(config_path=path, environ={"MODGATE_REDIS_URL": ""})
    assert settings.redis_url is None


def test_overrides_override_env(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"workers": 4, "listen": "127.0.0.1:7000"})
    env = {"MODGATE_WORKERS": "8", "MODGATE_LISTEN": "127.0.0.1:7001"}
    settings = load_settings(
        config_path=path,
        environ=env,
        overrides={"workers": 16, "listen": "[::]:7002", "upstream_timeout": "3", "mode": None},
    )
    assert settings.workers == 16  # already typed
    assert settings.upstream_timeout == 3.0  # a string, parsed like env
    assert settings.listen == "[::]:7002" and settings.listen_addresses.public.host == "::"
    assert settings.mode == "gateway"  # None = flag not given


def test_unknown_override_is_refused() -> None:
    message = error_of(config_path=str(EXAMPLE), environ={}, overrides={"wrokers": 2})
    assert message == "unknown setting 'wrokers' in overrides (did you mean 'workers'?)"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("0.0.0.0:8080", "0.0.0.0", 8080),
        ("[::]:8080", "::", 8080),
        ("[::1]:8080", "::1", 8080),
        ("localhost:8080", "localhost", 8080),
        ("gateway.internal:65535", "gateway.internal", 65535),
        ("127.0.0.1:0", "127.0.0.1", 0),
        (" 127.0.0.1:81 ", "127.0.0.1", 81),
    ],
)
def test_listen_forms(text: str, host: str, port: int) -> None:
    settings = load_settings(config_path=str(EXAMPLE), environ={"MODGATE_ADMIN_LISTEN": text})
    assert settings.listen_addresses.admin == Address(host, port)


@pytest.mark.parametrize(
    ("text", "authority"),
    [
        ("0.0.0.0:8080", "127.0.0.1:8080"),
        ("[::]:8081", "[::1]:8081"),
        ("[::1]:8082", "[::1]:8082"),
        ("localhost:8083", "localhost:8083"),
        ("10.1.2.3:8084", "10.1.2.3:8084"),
        ("127.0.0.1:0", None),  # the port is only known once bound
    ],
)
def test_local_authority_of_a_listen_address(text: str, authority: str | None) -> None:
    # What `{listen}` in an embedded manifest becomes (proxy/routing/manifest.py).
    assert Address.parse(text).local_authority() == authority


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[(word, True) for word in ("true", "TRUE", "1", "yes", "Yes", " true ")],
        *[(word, False) for word in ("false", "False", "0", "no", "NO")],
        (True, True),
        (False, False),
        (1, True),
        (0, False),
    ],
)
def test_boolean_rule(text: object, expected: bool) -> None:
    # No setting is a bool yet; the rule the first one will use is tested here directly.
    assert BOOLEAN.parse(text) is expected


@pytest.mark.parametrize("text", ["maybe", "", "2", 2, None, 1.0])
def test_boolean_rule_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        BOOLEAN.parse(text)


# -- bad values: one exact message per field, from each source

_LISTEN = "host:port (e.g. 127.0.0.1:8080)"
BAD_VALUES: list[tuple[str, object, str]] = [
    ("listen", "8080", _LISTEN),
    ("listen", "localhost", _LISTEN),
    ("listen", "127.0.0.1:65536", _LISTEN),
    ("listen", "::1:8080", _LISTEN),
    ("listen", "[nothost]:80", _LISTEN),
    ("listen", ":8080", _LISTEN),
    ("listen", "127.0.0.1:-1", _LISTEN),
    ("listen", "127.0.0.1:http", _LISTEN),
    ("listen", 8080, _LISTEN),
    ("admin_listen", "nope", _LISTEN),
    ("mode", "proxy", "one of gateway, sidecar"),
    ("sidecar_module", 42, "a module id or name"),
    ("database_url", "localhost:5432", "a postgres:// or postgresql:// URL"),
    ("database_url", "mysql://app:pw@db/app", "a postgres:// or postgresql:// URL"),
    ("redis_url", "http://cache:6379", "a redis://, rediss:// or unix:// URL"),
    ("routes_file", "", "a file path"),
    ("routes_file", 42, "a file path"),
    ("routes_poll_seconds", "0", "a number > 0"),
    ("routes_poll_seconds", "nan", "a number > 0"),
    ("workers", "0", "an integer >= 1"),
    ("workers", "abc", "an integer >= 1"),
    ("workers", "1.5", "an integer >= 1"),
    ("workers", True, "an integer >= 1"),
    ("max_body_bytes", "-1", "an integer >= 0"),
    ("client_header_timeout_seconds", "0", "a number > 0"),
    ("client_header_timeout_seconds", "soon", "a number > 0"),
    ("client_body_timeout_seconds", "-1", "a number > 0"),
    ("client_keepalive_seconds", "0", "a number > 0"),
    ("max_client_connections", "0", "an integer >= 1"),
    ("max_client_connections", "1.5", "an integer >= 1"),
    ("upstream_connect_timeout", "0", "a number > 0"),
    ("upstream_pool_wait_seconds", "0", "a number > 0"),
    ("upstream_timeout", "-5", "a number > 0"),
    ("upstream_timeout", "inf", "a number > 0"),
    ("upstream_max_connections", "0", "an integer >= 1"),
    ("upstream_keepalive_seconds", "0", "a number > 0"),
    ("shutdown_grace_seconds", "-1", "a number >= 0"),
    ("shutdown_grace_seconds", "soon", "a number >= 0"),
    ("database_pool_size", "0", "an integer >= 1"),
    ("database_timeout", "0", "a number > 0"),
    ("database_reconnect_max_seconds", "0", "a number > 0"),
    ("trusted_proxies", "10.0.0.0/33", "a list of CIDRs (e.g. 10.0.0.0/8)"),
    ("trusted_proxies", "not-an-ip", "a list of CIDRs (e.g. 10.0.0.0/8)"),
    ("trusted_proxies", 10, "a list of CIDRs (e.g. 10.0.0.0/8)"),
    ("jwt_secret", 42, "a secret"),
    ("jwt_public_key", 42, "PEM text or a file path"),
    ("jwks_url", "ftp://keys", "a http:// or https:// URL"),
    ("jwt_issuer", 1, "an issuer"),
    ("jwt_audience", 1, "an audience"),
    ("jwt_leeway_seconds", "-1", "a number >= 0"),
    ("jwt_site_claim", "", "a claim name"),
    ("jwt_default_scopes", "read contacts", "a list of scopes"),
    # A scope reaches upstreams in the X-Scopes line: CR LF would have forged X-User-Id.
    ("jwt_default_scopes", "read:a\tb,read:c\r\nX-User-Id:admin", "a list of scopes"),
    ("jwt_default_scopes", "read:c\x00", "a list of scopes"),
    ("jwks_refresh_seconds", "0", "a number > 0"),
    ("key_cache_size", "0", "an integer >= 1"),
    ("key_negative_ttl_seconds", "-1", "a number >= 0"),
    ("key_lookup_budget_per_second", "0", "a number > 0"),
    ("usage_flush_seconds", "0", "a number > 0"),
    ("cors_origins", "app.example.com", "a list of origins (https://app.example, *)"),
    ("cors_origins", "https://app.example/path", "a list of origins (https://app.example, *)"),
    ("cors_max_age_seconds", "-1", "an integer >= 0"),
    ("cors_allow_credentials", "yes please", "true or false"),
    ("rate_limit_enabled", "maybe", "true or false"),
    ("default_rate_limit_per_minute", "0", "an integer >= 1"),
    ("default_rate_limit_per_day", "-1", "an integer >= 0"),
    ("redis_timeout_seconds", "0", "a number > 0"),
    ("redis_failure_policy", "ignore", "one of local, open, closed"),
    ("rate_limit_replicas", "0", "an integer >= 1"),
    ("redis_circuit_failures", "0", "an integer >= 1"),
    ("redis_circuit_window_seconds", "-0.5", "a number >= 0"),
    ("redis_circuit_cooldown_seconds", "0", "a number > 0"),
    ("local_buckets_max", "0", "an integer >= 1"),
    ("access_log", "loud", "true or false"),
    ("request_log_enabled", "2", "true or false"),
    ("request_log_queue_size", "0", "an integer >= 1"),
    ("request_log_queue_bytes", "1.5", "an integer >= 1"),
    ("request_log_flush_seconds", "0", "a number > 0"),
    ("request_log_batch_rows", "0", "an integer >= 1"),
    ("log_retention_days", "-1", "an integer >= 0"),
    ("executor_url", "tcp://pool:8090", "a http:// or https:// URL"),
    ("executor_token", 42, "a secret"),
    ("secrets_key", "c2hvcnQ=", "32 bytes in base64"),
    ("secrets_key", "not base64!", "32 bytes in base64"),
    ("executor_listen", "8090", _LISTEN),
    ("executor_workers", "0", "an integer >= 1"),
    ("executor_timeout_seconds", "0", "a number > 0"),
    ("executor_memory_mb", "4", "an integer >= 8"),
    ("executor_concurrency", "0", "an integer >= 1"),
    ("executor_module_concurrency", "0", "an integer >= 1"),
    ("executor_queue_size", "-1", "an integer >= 0"),
    ("executor_max_isolates", "0", "an integer >= 1"),
    ("executor_max_response_bytes", "0", "an integer >= 1"),
    ("log_level", "verbose", "one of debug, info, warning, error"),
    ("log_format", "xml", "one of text, json"),
]


def _shown(value: object, key: str = "") -> str:
    # What the message quotes: secrets masked, like the real thing.
    if key in ("jwt_secret", "executor_token", "secrets_key"):
        return "'***'"
    return repr(value.replace(":pw@", ":***@") if isinstance(value, str) else value)


def test_every_field_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in BAD_VALUES} == set(Settings.field_names())


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_bad_value_from_file(tmp_path: Path, key: str, value: object, expected: str) -> None:
    path = write_config(tmp_path, {key: value})
    message = error_of(config_path=path, environ={})
    assert message == f"{key}: expected {expected}, got {_shown(value, key)} (from {path})"


@pytest.mark.parametrize(
    ("key", "value", "expected"), [case for case in BAD_VALUES if isinstance(case[1], str)]
)
def test_bad_value_from_env(key: str, value: str, expected: str) -> None:
    var = "MODGATE_" + key.upper()
    message = error_of(config_path=str(EXAMPLE), environ={var: value})
    assert message == f"{key}: expected {expected}, got {_shown(value, key)} (from {var})"


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_bad_value_from_overrides(key: str, value: object, expected: str) -> None:
    flag = "--" + key.replace("_", "-")
    message = error_of(config_path=str(EXAMPLE), environ={}, overrides={key: value})
    assert message == f"{key}: expected {expected}, got {_shown(value, key)} (from {flag})"


def test_workers_example_message() -> None:
    message = error_of(config_path=str(EXAMPLE), environ={"MODGATE_WORKERS": "abc"})
    assert message == "workers: expected an integer >= 1, got 'abc' (from MODGATE_WORKERS)"


def test_sidecar_needs_a_module_whatever_the_source() -> None:
    message = error_of(config_path=str(EXAMPLE), environ={}, overrides={"mode": "sidecar"})
    assert message == "sidecar_module: required when mode is sidecar"


# -- the folder of bad config files, each with its expected message in its first line


def _bad_files() -> list[Path]:
    return sorted(BAD_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", _bad_files(), ids=lambda p: p.stem)
def test_bad_config_file(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    match = re.fullmatch(r"# expect: (.+)", first)
    assert match, f"{path.name} must start with '# expect: <message>'"
    message = error_of(config_path=str(path), environ={})
    assert message == match[1].replace("{path}", str(path))


def test_bad_config_folder_is_not_empty() -> None:
    assert len(_bad_files()) >= 10


# -- the config file path


def test_explicit_missing_path_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "x.yaml")
    assert error_of(config_path=missing, environ={}) == f"config file '{missing}' not found"


def test_missing_path_from_env_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "x.yaml")
    message = error_of(environ={"MODGATE_CONFIG": missing})
    assert message == f"config file '{missing}' not found"


def test_path_from_env_is_used(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"workers": 3})
    assert load_settings(environ={"MODGATE_CONFIG": path}).workers == 3


def test_argument_wins_over_env_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"workers": 3})
    missing = str(tmp_path / "missing.yaml")
    assert load_settings(config_path=path, environ={"MODGATE_CONFIG": missing}).workers == 3


def test_implicit_default_path_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gateway.yaml").write_text("workers: 5\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={}).workers == 5


def test_unreadable_path_is_an_error(tmp_path: Path) -> None:
    message = error_of(config_path=str(tmp_path), environ={})
    assert message.startswith(f"config file '{tmp_path}': cannot read: ")


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("routes_file: caf\xe9.yaml\n".encode("latin-1"))
    assert error_of(config_path=str(path), environ={}) == f"config file '{path}': not UTF-8 text"


# -- warnings, repr, help text


def test_unknown_env_vars_become_warnings() -> None:
    env = {
        "MODGATE_WOKERS": "4",
        "MODGATE_SOMETHING_ELSE": "x",
        "MODGATE_CONFIG": str(EXAMPLE),  # the path, not a setting: no warning
        "HOME": "/root",
    }
    settings = load_settings(environ=env)
    assert settings.workers == 1
    assert settings.warnings == (
        "ignoring unknown environment variable MODGATE_SOMETHING_ELSE",
        "ignoring unknown environment variable MODGATE_WOKERS (did you mean MODGATE_WORKERS?)",
    )


def test_repr_masks_secrets() -> None:
    settings = load_settings(
        config_path=str(EXAMPLE),
        environ={
            "MODGATE_DATABASE_URL": "postgresql://user:s3cret@db:5432/platform",
            "MODGATE_REDIS_URL": "rediss://default:hunter2@cache:6380/0?password=hunter2",
        },
    )
    text = repr(settings)
    assert "s3cret" not in text and "hunter2" not in text
    assert "database_url='postgresql://user:***@db:5432/platform'" in text
    assert "redis_url='rediss://default:***@cache:6380/0?password=***'" in text
    assert settings.database_url == "postgresql://user:s3cret@db:5432/platform"  # value intact
    assert str(settings) == text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        ("postgres://user@host/db", "postgres://user@host/db"),
        ("postgresql://host:5432/db", "postgresql://host:5432/db"),
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
        ("unix://:pw@/run/redis.sock", "unix://:***@/run/redis.sock"),
        ("redis://cache:6379/0?password=pw&db=1", "redis://cache:6379/0?password=***&db=1"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert settings_module.mask_url(url) == masked


def test_describe_settings_lists_every_key() -> None:
    text = describe_settings()
    for field in FIELDS:
        default = "unset" if field.default is None else field.default
        assert f"  {field.name}  ({field.env_var}, default: {default})" in text
        assert field.doc in text


# -- the example config documents every key with its default


def test_example_config_loads_to_the_defaults() -> None:
    settings = load_settings(config_path=str(EXAMPLE), environ={})
    assert {name: getattr(settings, name) for name in Settings.field_names()} == dict(DEFAULTS)


def test_example_config_lists_every_key_with_its_default() -> None:
    documented: dict[str, object] = {}
    for line in EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"# ([a-z_]+):(.*)", line)
        if match and match[1] in DEFAULTS:
            assert match[1] not in documented, f"{match[1]} listed twice"
            value = yaml.safe_load(match[2] or "null")
            documented[match[1]] = tuple(value) if isinstance(value, list) else value
    assert documented == dict(DEFAULTS)


def test_lists_from_env_and_yaml(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("trusted_proxies: [10.0.0.0/8, '2001:db8::/32']\ncors_origins: ['*']\n")
    settings = load_settings(
        config, environ={"MODGATE_JWT_DEFAULT_SCOPES": "read:*, write:contacts"}
    )
    assert settings.trusted_proxies == ("10.0.0.0/8", "2001:db8::/32")
    assert settings.cors_origins == ("*",)
    assert settings.jwt_default_scopes == ("read:*", "write:contacts")
    settings = load_settings(config, environ={"MODGATE_TRUSTED_PROXIES": "192.168.1.7"})
    assert settings.trusted_proxies == ("192.168.1.7",)  # the key fields' form (allowed_ips)


def test_jwt_secret_is_never_shown(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path / "none.yaml" if False else None, environ={"MODGATE_JWT_SECRET": "s3cret-value"}
    )
    assert settings.jwt_secret == "s3cret-value"
    assert "s3cret-value" not in repr(settings)
    assert "jwt_secret='***'" in repr(settings)
