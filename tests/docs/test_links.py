"""Relative links in README.md, docs/ and the asset READMEs point at files that exist, and at
headings that exist in them; the front door links every page of the manual."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.markdown import DOCS, LINKED, ROOT, anchors, links


def _relative_links(page: Path) -> list[str]:
    return [link for link in links(page.read_text()) if "://" not in link and ":" not in link[:7]]


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in _relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no file {target.relative_to(ROOT)}")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text()):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert broken == [], f"{page.relative_to(ROOT)}: broken links"


def test_the_readme_links_every_page_of_the_manual() -> None:
    linked = {
        (ROOT / link.partition("#")[0]).resolve()
        for link in _relative_links(ROOT / "README.md")
        if link.startswith("docs/")
    }
    assert set(DOCS.glob("*.md")) - linked == set()
