"""YAML text to data, with a bad document described in one line for the error that quotes it."""

from __future__ import annotations

import yaml


class InvalidYaml(ValueError):
    """Not YAML; the message says where and what: "invalid YAML at line 3: ..."."""


def parse_yaml(text: str) -> object:
    """`yaml.safe_load`, raising InvalidYaml instead of the parser's multi-line errors."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InvalidYaml(f"invalid YAML{where}: {problem}") from None
