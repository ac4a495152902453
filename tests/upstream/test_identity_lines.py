"""identity_lines: the caller's identity as header lines, none of which a value can end early."""

from __future__ import annotations

import pytest

from proxy.auth.principal import JWT, Principal
from proxy.auth.scopes import Grants
from proxy.errors import InternalError
from proxy.upstream.headers import identity_lines

MODULE = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"


def test_lines_of_a_jwt_caller() -> None:
    who = Principal(JWT, Grants(("read:a", "write:b")), site_id="s-1", user_id="u-1")
    assert identity_lines("rid-1", MODULE, who) == [
        b"X-Request-ID: rid-1\r\n",
        f"X-Module-Id: {MODULE}\r\n".encode(),
        b"X-Site-Id: s-1\r\n",
        b"X-User-Id: u-1\r\n",
        b"X-Scopes: read:a write:b\r\n",
    ]


def test_a_user_id_that_is_not_printable_is_left_out() -> None:
    who = Principal(JWT, Grants(()), user_id="u-1\r\nX-Site-Id: forged")
    assert identity_lines("rid-1", MODULE, who) == [
        b"X-Request-ID: rid-1\r\n",
        f"X-Module-Id: {MODULE}\r\n".encode(),
    ]


@pytest.mark.parametrize(
    "who",
    [
        Principal(JWT, Grants(()), site_id="s-1\r\nX-User-Id: admin"),
        Principal(JWT, Grants(("read:a\x00",)), site_id="s-1"),
        Principal(JWT, Grants(("read:a\nX-User-Id: admin",))),
    ],
    ids=["site", "scope-nul", "scope-lf"],
)
def test_any_other_value_with_a_control_character_is_a_500(who: Principal) -> None:
    """Every source refuses these already; were one to slip through, nothing is written."""
    with pytest.raises(InternalError):
        identity_lines("rid-1", MODULE, who)
