"""Per-subsystem views of the settings, in the spirit of httpx's `Timeout` and `Limits`.

Each view is a frozen, slotted value made once when `Settings` is built (`settings.upstream`,
`.database`, ...), so a component is handed the few values it uses under short names, not the
whole table, and nothing is parsed again after load. A view adds no names of its own: field
`x` of a view made with prefix `p` is the setting `p + x` (`upstream.timeout` is
`upstream_timeout`); tests/test_settings.py holds the fields' types to the settings' types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeVar

from proxy.setting_rules import parse_address

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from proxy.settings import Settings

FailurePolicy = Literal["local", "open", "closed"]
View = TypeVar("View", bound="DataclassInstance")


def view(cls: type[View], settings: Settings, prefix: str) -> View:
    """`cls` with each field read from the setting named `prefix` + the field's name."""
    return cls(**{f.name: getattr(settings, prefix + f.name) for f in dataclasses.fields(cls)})


class Address(NamedTuple):
    """A parsed `host:port` setting. The host of "[::]:8080" is "::", ready for bind()."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        return cls(*parse_address(text))

    def local_authority(self) -> str | None:
        """The host:port a client on this machine dials to reach this address: a wildcard host
        as loopback ("0.0.0.0:8080" -> "127.0.0.1:8080", "[::]:8080" -> "[::1]:8080"). None for
        port 0: the port is chosen when the socket binds."""
        if self.port == 0:
            return None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenAddresses:
    """Where the processes listen: `listen`, `admin_listen`, `executor_listen`, parsed."""

    public: Address
    admin: Address
    executor: Address

    @classmethod
    def of(cls, settings: Settings) -> ListenAddresses:
        return cls(
            public=Address.parse(settings.listen),
            admin=Address.parse(settings.admin_listen),
            executor=Address.parse(settings.executor_listen),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamLimits:
    """upstream_*: the connections to module upstreams, their timeouts and their pool."""

    connect_timeout: float
    pool_wait_seconds: float  # for a free connection at the pool's limit
    timeout: float  # a whole upstream request
    max_connections: int
    keepalive_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSettings:
    """database_*: Postgres; an unset `url` is the embedded mode."""

    url: str | None = dataclasses.field(repr=False)  # may carry a password
    pool_size: int
    timeout: float
    reconnect_max_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSettings:
    """redis_*: the shared rate-limit buckets; an unset `url` keeps them in process."""

    url: str | None = dataclasses.field(repr=False)  # may carry a password
    timeout_seconds: float  # one rate-limit call, from queued to answered
    failure_policy: FailurePolicy
    circuit_failures: int  # consecutive failures that open the circuit
    circuit_window_seconds: float
    circuit_cooldown_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestLogSettings:
    """request_log_*: the rows written to module_api_logs (Postgres mode), in batches."""

    enabled: bool
    queue_size: int  # rows held in memory, queued or kept while Postgres is down
    queue_bytes: int  # the memory they may hold (estimated)
    flush_seconds: float
    batch_rows: int


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCacheSettings:
    """key_*: the API-key cache of each worker process."""

    cache_size: int
    negative_ttl_seconds: float  # an unknown key hash is remembered as unknown this long
    lookup_budget_per_second: float  # Postgres lookups while the key index is not loaded
