"""The Dockerfile, read by Docker's own parser (the `dockerfile` package wraps BuildKit's)."""

from __future__ import annotations

import re
from pathlib import Path

import dockerfile

ROOT = Path(__file__).resolve().parents[2]
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make)\b")


def _stages() -> list[list[dockerfile.Command]]:
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd.upper() == "FROM":
            stages.append([])
        stages[-1].append(command)
    return stages


def test_multi_stage_with_pinned_bases() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0].value[0]
        assert ":" in image and not image.endswith(":latest"), image
        assert re.search(r":\d+\.\d+\.\d+", image), f"{image}: pin an exact version"


def test_final_stage_is_hardened() -> None:
    final = _stages()[-1]
    commands = [(c.cmd.upper(), c.value, c.json) for c in final]
    users = [value[0] for cmd, value, _ in commands if cmd == "USER"]
    assert users and users[-1] not in ("root", "0"), "the final image must not run as root"
    for cmd, value, _ in commands:
        if cmd == "RUN":
            assert not COMPILERS.search(" ".join(value)), f"compiler in the final image: {value}"
    entrypoint = [(value, is_json) for cmd, value, is_json in commands if cmd == "ENTRYPOINT"]
    assert entrypoint == [(("modgate",), True)], "exec-form ENTRYPOINT so signals reach modgate"
    assert any(cmd == "HEALTHCHECK" for cmd, _, _ in commands)


def test_no_remote_add_anywhere() -> None:
    for stage in _stages():
        for command in stage:
            if command.cmd.upper() == "ADD":
                assert not any(v.startswith(("http://", "https://", "git@")) for v in command.value)


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests"):
        assert entry in ignored
    # The build stage copies these: ignoring them would break `docker build`.
    for needed in ("README.md", "pyproject.toml", "proxy", "config"):
        assert needed not in ignored
