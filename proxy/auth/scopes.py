"""Scope grants: exact scopes, `prefix:*` wildcards and `*`, compiled once per principal.

A route's `required_scopes` must all be granted. `read:*` grants `read:contacts` (and
`read:contacts:notes`); `*` grants everything. Nothing else is implied: a grant of `read` does
not grant `read:contacts`, and `write:*` does not grant `read:*`.

An API consumer's scopes (EM-33) are kinds of operation on its whole module: `read`, `write`,
`delete` stand for `read:*`, `write:*`, `delete:*`, and `admin` for `*` (`consumer_grants`).
"Its whole module" is not a scope rule: a consumer is refused on any other module before its
scopes are read (proxy/auth/authenticator.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final


class Grants:
    __slots__ = ("_all", "_exact", "_prefixes", "scopes")

    def __init__(self, scopes: Iterable[str]) -> None:
        self.scopes = tuple(dict.fromkeys(scopes))  # deduplicated, order kept (for X-Scopes)
        self._all = "*" in self.scopes
        self._exact = frozenset(self.scopes)
        # "read:*" -> "read:"; matched with str.startswith on the required scope.
        self._prefixes = tuple(s[:-1] for s in self.scopes if s.endswith(":*"))

    def allows(self, required: str) -> bool:
        if self._all or required in self._exact:
            return True
        return bool(self._prefixes) and required.startswith(self._prefixes)

    def missing(self, required: Iterable[str]) -> list[str]:
        return [scope for scope in required if not self.allows(scope)]

    def __repr__(self) -> str:
        return f"Grants({' '.join(self.scopes)!r})"


NO_GRANTS = Grants(())

# An API consumer's scope -> the scope it grants. Any other value (a row written by hand) is
# kept as an exact scope: it grants itself, nothing more.
CONSUMER_GRANTS: Final = {"read": "read:*", "write": "write:*", "delete": "delete:*", "admin": "*"}


def consumer_grants(scopes: Iterable[str]) -> Grants:
    """What an API consumer with these scopes may do within its module."""
    return Grants(CONSUMER_GRANTS.get(scope, scope) for scope in scopes)
