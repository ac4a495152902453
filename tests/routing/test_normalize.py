"""Path normalisation: the examples table of docs/forwarding-and-security.md; the refusals."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequest
from proxy.routing.normalize import (
    has_encoded_slash,
    hides_dot_segment,
    normalize_path,
    origin_form,
)

# (request path after /api/modules/{id}, normalised path, has an encoded separator)
EXAMPLES = [
    ("/contacts/7", "/contacts/7", False),
    ("/", "/", False),
    ("", "/", False),
    ("/public/../admin/secret", "/admin/secret", False),
    ("/public/%2e%2e/admin/secret", "/admin/secret", False),
    ("/public/%2E%2E/admin/secret", "/admin/secret", False),
    ("/public/.%2e/admin/secret", "/admin/secret", False),
    ("/public/%2e./admin", "/admin", False),
    ("/a/./b/.", "/a/b/", False),
    ("/a/%2e/b", "/a/b", False),
    ("/a/b/..", "/a/", False),
    ("/a//b///c", "/a/b/c", False),
    ("//admin/secret", "/admin/secret", False),
    ("/a/b/", "/a/b/", False),
    ("/a/...", "/a/...", False),
    ("/a/.x/..y", "/a/.x/..y", False),
    ("/a/%2e%2e%2e", "/a/%2e%2e%2e", False),
    ("/files/a%2Fb", "/files/a%2Fb", True),
    ("/files/a%2fb/../c", "/files/c", False),
    ("/files/a%5Cb", "/files/a%5Cb", True),
    ("/files/%7Euser", "/files/%7Euser", False),
    ("/a;v=1/b;x", "/a;v=1/b;x", False),
    ("/a/...;x", "/a/...;x", False),
]


@pytest.mark.parametrize(("raw", "normal", "encoded"), EXAMPLES)
def test_normal_form(raw: str, normal: str, encoded: bool) -> None:
    path = normalize_path(raw)
    assert (path, has_encoded_slash(path)) == (normal, encoded)


def test_common_paths_come_back_as_the_same_object() -> None:
    path = "/contacts/7/notes"
    assert normalize_path(path) is path


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("/..", "Path climbs above its root"),
        ("/%2e%2e/other-module/x", "Path climbs above its root"),
        ("/a/../../b", "Path climbs above its root"),
        ("/a\\..\\admin", "Backslash in path"),
        ("/a\\b", "Backslash in path"),
        ("/public/..;/admin", "A dot segment cannot carry path parameters (';')"),
        ("/public/%2e%2e;x=1/admin", "A dot segment cannot carry path parameters (';')"),
        ("/public/.;/admin", "A dot segment cannot carry path parameters (';')"),
    ],
)
def test_refused(raw: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        normalize_path(raw)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("target", "host", "expected"),
    [
        ("/a?b", "gw", "/a?b"),
        ("http://gw/api/modules/x/a?b=1", "gw", "/api/modules/x/a?b=1"),
        ("HTTP://GW:8080/p", "gw:8080", "/p"),
        ("https://gw", "gw", "/"),
        ("http://gw?x=1", "gw", "/?x=1"),
    ],
)
def test_absolute_form_targets(target: str, host: str, expected: str) -> None:
    assert origin_form(target, host) == expected


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("http://other/api/modules/x/a", "gw"),
        ("http://gw:81/p", "gw:80"),
        ("http://user@gw/p", "gw"),
        ("http://gw/p", None),
    ],
)
def test_absolute_form_authority_must_match_host(target: str, host: str | None) -> None:
    with pytest.raises(BadRequest):
        origin_form(target, host)


@pytest.mark.parametrize(
    ("path", "hides"),
    [
        ("/kfiles/..%2Fbase%2Fadmin%2Fsecret", True),
        ("/kfiles/a%2F..%2F..%2Fx", True),
        ("/kfiles/a%5C..", True),
        ("/kfiles/.%2Fa", True),
        ("/kfiles/%2e%2e%2Fa", True),
        ("/kfiles/a%2Fb", False),
        ("/kfiles/a%2F...%2Fb", False),
        ("/kfiles/..a%2Fb", False),
    ],
)
def test_encoded_slashes_cannot_hide_dot_segments(path: str, hides: bool) -> None:
    assert hides_dot_segment(path) is hides
