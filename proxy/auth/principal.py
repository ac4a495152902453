"""Who is calling: the outcome of authentication, read by authorization, limits and headers."""

from __future__ import annotations

from proxy.auth.key_directory import ApiKey
from proxy.auth.scopes import Grants

API_KEY = "api_key"
JWT = "jwt"
ANONYMOUS = "none"  # the seed's auth_type for unauthenticated calls


class Principal:
    __slots__ = ("api_key", "auth_type", "credential_header", "grants", "site_id", "user_id")

    def __init__(
        self,
        auth_type: str,
        grants: Grants,
        *,
        site_id: str | None = None,
        user_id: str | None = None,
        api_key: ApiKey | None = None,
        credential_header: str | None = None,
    ) -> None:
        self.auth_type = auth_type
        self.grants = grants
        self.site_id = site_id
        self.user_id = user_id
        self.api_key = api_key
        # The header the credential came in (X-API-Key or Authorization): stripped upstream.
        self.credential_header = credential_header

    @property
    def api_key_id(self) -> str | None:
        return self.api_key.record.id if self.api_key is not None else None

    def __repr__(self) -> str:
        who = self.api_key or self.user_id or "anonymous"
        return f"<Principal {self.auth_type} {who} site={self.site_id}>"
