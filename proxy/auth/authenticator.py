"""Authentication (who is calling) and authorization (may they call this route).

Strategy, per request:
1. X-API-Key, if present: shape check, SHA-256, in-memory directory; then is_active,
   revoked_at and expires_at. Else `Authorization: Bearer`: the JWT verifier. Either header
   holding a `dk_` value carries an API consumer's key instead (a prefix test, so module-key
   and JWT callers pay nothing more): its own directory, same steps. Credentials that are
   present are always checked, even on routes that need none. Beside X-API-Key, an
   Authorization header is the upstream's (a user's token for the module) and is not read,
   unless it is a Bearer `dk_` key (only ever the gateway's): that, or a repeated X-API-Key
   or Authorization header, is a 401 (which credential was meant cannot be told), decided by
   a header count before any lookup.
2. No credentials: only routes with requires_auth false; anonymous callers get `read:*` and the
   seed's `?site_id=` context.
3. Authorization: a key works only for its own module, from its allowed IPs and origins; a
   consumer only for its own module, from its allowed IPs, on its allowed endpoints (the
   matched route's method and template); every required scope must be granted.
A consumer's signed request (RFC 9421) is verified by `signatures` (proxy/auth/signatures.py),
which the pipeline calls right after `authenticate` for a consumer that requires signatures or
sent one: it needs the request's target and body, which this step does not read.
Every 401 says the same thing whatever the reason, so nobody can probe which keys exist; the
reason goes to the log (with the key prefix only) and to metrics.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from multidict import CIMultiDictProxy

from proxy.auth.api_keys import API_KEY_FORMAT, KeyFormat, hash_key, key_prefix
from proxy.auth.client_address import IPAddress, in_networks
from proxy.auth.consumer_keys import CONSUMER_KEY_FORMAT, CONSUMER_KEY_PREFIX
from proxy.auth.consumers import Consumer, ConsumerDirectory
from proxy.auth.credential_directory import Compiled, CredentialDirectory
from proxy.auth.key_directory import ApiKey, KeyDirectory
from proxy.auth.key_fields import canonical_uuid
from proxy.auth.principal import ANONYMOUS, API_KEY, CONSUMER, JWT, Principal
from proxy.auth.scopes import Grants
from proxy.auth.signatures import SignatureVerifier
from proxy.errors import BadRequest, Forbidden, Unauthorized
from proxy.observability import metrics

if TYPE_CHECKING:
    from proxy.auth.jwt import JwtVerifier
    from proxy.auth.usage import UsageRecorder
    from proxy.routing.model import RouteSpec

log = logging.getLogger("modgate.auth")
E = TypeVar("E", bound=Compiled)

ANONYMOUS_GRANTS = Grants(("read:*",))  # the seed's anonymous context: read scopes only
_BEARER = "bearer "
_NONE: tuple[str, ...] = ()
AMBIGUOUS_CREDENTIALS = (
    "Ambiguous credentials: send at most one X-API-Key and one Authorization header, and a "
    "dk_ key in only one of them"
)
_FAILURES = metrics.BoundLabels(metrics.AUTH_FAILURES)  # by reason; every 401/403 counts


def _unauthorized(reason: str) -> Unauthorized:
    _FAILURES(reason).inc()
    return Unauthorized(reason=reason)


def _ambiguous(reason: str) -> Unauthorized:
    # Says what is wrong with the request's shape, which tells nothing about any key.
    _FAILURES(reason).inc()
    return Unauthorized(AMBIGUOUS_CREDENTIALS, reason=reason)


def _bearer_token(authorization: str) -> str | None:
    """The credential of an `Authorization: Bearer ...` value; None for another scheme."""
    return authorization[7:].strip() if authorization[:7].lower() == _BEARER else None


def _forbidden(reason: str, message: str) -> Forbidden:
    _FAILURES(reason).inc()
    return Forbidden(message)


class Authenticator:
    __slots__ = ("_clock", "consumer_usage", "consumers", "jwt", "keys", "signatures", "usage")

    def __init__(
        self,
        keys: KeyDirectory,
        jwt: JwtVerifier | None = None,
        *,
        usage: UsageRecorder | None = None,
        consumers: ConsumerDirectory | None = None,
        consumer_usage: UsageRecorder | None = None,
        signatures: SignatureVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.jwt = jwt
        self.usage = usage
        # None (the embedded mode: consumers live only in Postgres): every dk_ key is unknown.
        self.consumers = consumers
        self.consumer_usage = consumer_usage
        self.signatures = signatures or SignatureVerifier()
        self._clock = clock

    async def authenticate(
        self, headers: CIMultiDictProxy[str], route: RouteSpec, query: str
    ) -> Principal:
        api_keys = headers.getall("X-API-Key", _NONE)
        authorizations = headers.getall("Authorization", _NONE)
        if len(api_keys) > 1 or len(authorizations) > 1:
            raise _ambiguous("repeated_credential_header")
        authorization = authorizations[0] if authorizations else None
        if api_keys:
            api_key = api_keys[0].strip()
            # Beside X-API-Key, Authorization is the upstream's (a user's token for the
            # module), not checked here; unless it holds a dk_ key, which is only ever the
            # gateway's: no telling which credential is meant (and the copy would be
            # forwarded, as Authorization is not the credential header here).
            if authorization is not None and CONSUMER_KEY_PREFIX in authorization:
                other = _bearer_token(authorization)
                if other is not None and other.startswith(CONSUMER_KEY_PREFIX):
                    raise _ambiguous("conflicting_credentials")
            if api_key.startswith(CONSUMER_KEY_PREFIX):
                return await self._by_consumer(api_key, "X-API-Key")
            return await self._by_api_key(api_key)
        token = None if authorization is None else _bearer_token(authorization)
        if token is not None:
            # What the seed's SDKs send; a JWT starts with "eyJ" (its base64url header).
            if token.startswith(CONSUMER_KEY_PREFIX):
                return await self._by_consumer(token, "Authorization")
            return await self._by_jwt(token)
        if route.requires_auth:
            raise _unauthorized("missing")
        site_id = anonymous_site(query) if query else None
        return Principal(ANONYMOUS, ANONYMOUS_GRANTS, site_id=site_id)

    async def _by_api_key(self, key: str) -> Principal:
        found = await self._look_up(self.keys, API_KEY_FORMAT, key, "unknown_key")
        if found.revoked:
            self._log_failure("revoked_key", key)
            raise _unauthorized("revoked_key")
        if found.expires_at is not None and self._clock() >= found.expires_at:
            self._log_failure("expired_key", key)
            raise _unauthorized("expired_key")
        if self.usage is not None:
            self.usage.record(found.record.id)
        return Principal(
            API_KEY,
            found.grants,
            site_id=found.record.site_id,
            api_key=found,
            credential_header="X-API-Key",
        )

    async def _by_consumer(self, key: str, header: str) -> Principal:
        found = await self._look_up(self.consumers, CONSUMER_KEY_FORMAT, key, "unknown_consumer")
        # Inactive consumers are never cached (the directory drops them on NOTIFY).
        if self.consumer_usage is not None:
            self.consumer_usage.record(found.record.id)
        return Principal(
            CONSUMER,
            found.grants,
            site_id=found.record.site_id,
            consumer=found,
            credential_header=header,
        )

    async def _look_up(
        self,
        directory: CredentialDirectory[Any, E] | None,
        key_format: KeyFormat,
        key: str,
        unknown: str,
    ) -> E:
        """The credential `key` names in `directory`; 401 `malformed_key` or `unknown`."""
        if not key_format.is_well_formed(key):
            raise _unauthorized("malformed_key")
        key_hash = hash_key(key)
        found = None if directory is None else await directory.lookup(key_hash)
        # The directory is keyed by hash; comparing again in constant time keeps the last step
        # free of timing differences even if a lookup structure ever compares by prefix.
        if found is None or not hmac.compare_digest(found.record.key_hash, key_hash):
            self._log_failure(unknown, key)
            raise _unauthorized(unknown)
        return found

    async def _by_jwt(self, token: str) -> Principal:
        if self.jwt is None:
            raise _unauthorized("jwt_not_configured")
        try:
            identity = await self.jwt.verify(token)
        except Unauthorized as exc:
            raise _unauthorized(exc.reason) from None  # one message for every 401
        return Principal(
            JWT,
            Grants(identity.scopes),
            site_id=identity.site_id,
            user_id=identity.user_id,
            credential_header="Authorization",
        )

    @staticmethod
    def _log_failure(reason: str, key: str) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("API key refused (%s): prefix %s", reason, key_prefix(key))


def anonymous_site(query: str) -> str | None:
    """The seed's `?site_id=` context for anonymous calls; it must be a UUID."""
    for name, value in parse_qsl(query):
        if name == "site_id":
            site_id = canonical_uuid(value)
            if site_id is None:
                raise BadRequest("site_id must be a UUID")
            return site_id
    return None


def authorize(
    principal: Principal,
    route: RouteSpec,
    module_id: str,
    client_ip: IPAddress | None,
    origin: str | None,
) -> None:
    """Raise Forbidden unless this principal may call this route of this module."""
    key = principal.api_key
    if key is not None:
        _check_key(key, module_id, client_ip, origin)
    elif principal.consumer is not None:
        _check_consumer(principal.consumer, route, module_id, client_ip)
    if route.required_scopes:
        missing = principal.grants.missing(route.required_scopes)
        if missing:
            raise _forbidden("missing_scope", f"Missing scope: {' '.join(missing)}")


def _check_key(
    key: ApiKey, module_id: str, client_ip: IPAddress | None, origin: str | None
) -> None:
    if key.record.module_id != module_id:
        raise _forbidden("wrong_module", "This API key is not valid for this module")
    if key.networks and (client_ip is None or not in_networks(client_ip, key.networks)):
        raise _forbidden("ip_not_allowed", "This API key is not allowed from this address")
    # A key limited to origins is a browser key: a request without Origin is refused too,
    # or a script could use it from anywhere simply by leaving the header out.
    if key.origins and not key.any_origin and origin not in key.origins:
        raise _forbidden("origin_not_allowed", "This API key is not allowed from this origin")


def _check_consumer(
    consumer: Consumer, route: RouteSpec, module_id: str, client_ip: IPAddress | None
) -> None:
    if consumer.record.module_id != module_id:
        raise _forbidden("wrong_module", "This API consumer is not valid for this module")
    networks = consumer.networks
    if networks and (client_ip is None or not in_networks(client_ip, networks)):
        raise _forbidden("ip_not_allowed", "This API consumer is not allowed from this address")
    if not consumer.endpoints.allows(route.method, route.path):
        raise _forbidden(
            "endpoint_not_allowed", "This API consumer is not allowed to call this endpoint"
        )
