"""Who is calling: the outcome of authentication, read by authorization, limits and headers."""

from __future__ import annotations

from proxy.auth.consumers import Consumer
from proxy.auth.key_directory import ApiKey
from proxy.auth.scopes import Grants

API_KEY = "api_key"
JWT = "jwt"
CONSUMER = "consumer"  # an API consumer's dk_ key (EM-33)
ANONYMOUS = "none"  # the seed's auth_type for unauthenticated calls


class Principal:
    __slots__ = (
        "api_key", "auth_type", "consumer", "credential_header", "grants", "site_id", "user_id",
    )  # fmt: skip

    def __init__(
        self,
        auth_type: str,
        grants: Grants,
        *,
        site_id: str | None = None,
        user_id: str | None = None,
        api_key: ApiKey | None = None,
        consumer: Consumer | None = None,
        credential_header: str | None = None,
    ) -> None:
        self.auth_type = auth_type
        self.grants = grants
        self.site_id = site_id
        self.user_id = user_id
        self.api_key = api_key
        # An API consumer: bound to its module and site like a key, its id sent upstream as
        # X-Consumer-Id and logged as consumer_id (never as api_key_id: not a module key).
        self.consumer = consumer
        # The header the credential came in (X-API-Key or Authorization): stripped upstream.
        self.credential_header = credential_header

    @property
    def api_key_id(self) -> str | None:
        return self.api_key.record.id if self.api_key is not None else None

    @property
    def consumer_id(self) -> str | None:
        return self.consumer.record.id if self.consumer is not None else None

    def __repr__(self) -> str:
        who = self.api_key or self.consumer or self.user_id or "anonymous"
        return f"<Principal {self.auth_type} {who} site={self.site_id}>"
