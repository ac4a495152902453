"""The settings are documented exactly: config/gateway.yaml and docs/configuration.md list every
setting modgate has, no more, with its default.

Strategy: modgate's own table of settings is the truth; the two documents are parsed
(`# key: default` lines of the example file, the first column of the manual's table) and
compared with it as sets, so a setting added, renamed or removed in the code fails here until
both documents follow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import yaml

from proxy.settings import DEFAULTS, Settings
from tests.docs.markdown import DOCS, ROOT, table_rows

EXAMPLE = ROOT / "config" / "gateway.yaml"
MANUAL_PAGE = DOCS / "configuration.md"
_NAME = r"[a-z][a-z0-9_]*"


def setting_names() -> set[str]:
    """The settings modgate has: the one place these tests ask the code."""
    return set(Settings.field_names())


def setting_defaults() -> Mapping[str, object]:
    """Each setting's built-in default (None when unset)."""
    return DEFAULTS


def _example_keys() -> list[str]:
    # Every key is a commented-out `# key: default` line (a default has no spaces); prose
    # comments are sentences, even where one starts with a word and a colon.
    text = EXAMPLE.read_text()
    return re.findall(rf"^# ({_NAME}):(?: \S*)?$", text, flags=re.MULTILINE)


def _manual_rows() -> dict[str, str]:
    """setting -> its default cell, from the table(s) of docs/configuration.md."""
    rows: dict[str, str] = {}
    for cells in table_rows(MANUAL_PAGE.read_text()):
        match = re.fullmatch(rf"`({_NAME})`", cells[0])
        if match and len(cells) == 3:
            assert match[1] not in rows, f"{match[1]} has two rows in {MANUAL_PAGE.name}"
            rows[match[1]] = cells[1]
    return rows


def _documented_default(cell: str) -> object:
    if cell == "unset":
        return None
    match = re.fullmatch(r"`(.*)`", cell)
    assert match, f"default cell {cell!r}: expected `value` or unset"
    value = yaml.safe_load(match[1])
    return tuple(value) if isinstance(value, list) else value


def test_example_config_lists_exactly_the_settings() -> None:
    keys = _example_keys()
    assert len(keys) == len(set(keys)), f"{EXAMPLE.name} lists a key twice"
    assert set(keys) - setting_names() == set(), f"{EXAMPLE.name} documents unknown keys"
    assert setting_names() - set(keys) == set(), f"settings missing from {EXAMPLE.name}"


def test_manual_table_lists_exactly_the_settings() -> None:
    documented = set(_manual_rows())
    assert documented - setting_names() == set(), f"{MANUAL_PAGE.name} documents unknown keys"
    assert setting_names() - documented == set(), f"settings missing from {MANUAL_PAGE.name}"


def test_manual_table_shows_the_defaults() -> None:
    defaults = setting_defaults()
    wrong = {
        name: (cell, defaults[name])
        for name, cell in _manual_rows().items()
        if name in defaults and _documented_default(cell) != defaults[name]
    }
    assert wrong == {}, "documented default vs the code's"
