"""Reading the Markdown of README.md and docs/: code blocks, table rows, links, headings.

Small and strict on purpose: the docs are written in a plain subset (fenced blocks, pipe tables,
inline links), and a test that cannot read a page fails rather than passing over it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# The manual: the front door and every page of docs/.
MANUAL = (ROOT / "README.md", *sorted(DOCS.glob("*.md")))
# Everything whose relative links are checked: the manual and the READMEs next to the assets.
LINKED = (
    *MANUAL,
    ROOT / "deploy" / "helm" / "modgate" / "README.md",
    ROOT / "deploy" / "prometheus" / "README.md",
    ROOT / "bench" / "RESULTS.md",
)

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


def code_blocks(text: str, lang: str | None = None) -> list[str]:
    """Bodies of the fenced code blocks, those of one language when `lang` is given."""
    return [body for tag, body in _FENCE.findall(text) if lang is None or tag == lang]


def prose(text: str) -> str:
    """The text without its fenced code blocks (links and headings in code are not links)."""
    return _FENCE.sub("", text)


def table_rows(text: str) -> list[list[str]]:
    """Cells of every pipe-table row outside code blocks, header and separator rows dropped."""
    rows = []
    for line in prose(text).splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if all(re.fullmatch(r":?-+:?", cell) for cell in cells):
            continue
        rows.append(cells)
    return rows


def first_cell_names(text: str, pattern: str) -> list[str]:
    """The backticked names in the first cell of table rows, where they match `pattern`."""
    names = []
    for cells in table_rows(text):
        match = re.fullmatch(r"`([^`]+)`", cells[0])
        if match and re.fullmatch(pattern, match[1]):
            names.append(match[1])
    return names


def links(text: str) -> list[str]:
    """Targets of the inline links outside code blocks."""
    return _LINK.findall(prose(text))


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the page's headings (lowercase, punctuation dropped, - for spaces)."""
    found = set()
    for heading in _HEADING.findall(prose(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def shell_commands(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n", " ", block)
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            commands.extend(part.strip() for part in line.split("&&") if part.strip())
    return commands
