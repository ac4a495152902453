"""Every route manifest the manual shows is one modgate accepts: it parses and compiles, as
`modgate routes check -f FILE` would check it."""

from __future__ import annotations

import pytest

from proxy.routing.manifest import parse_manifest_text
from proxy.routing.table import compile_module
from tests.docs.markdown import MANUAL, ROOT, code_blocks

MANIFESTS = [
    (f"{page.relative_to(ROOT)}#{number}", block)
    for page in MANUAL
    for number, block in enumerate(code_blocks(page.read_text(), "yaml"), 1)
    if block.startswith("modules:")
]


def test_the_manual_shows_manifests() -> None:
    pages = {where.partition("#")[0] for where, _ in MANIFESTS}
    assert {"README.md", "docs/routes.md", "docs/handler-pool.md"} <= pages


@pytest.mark.parametrize(("where", "text"), MANIFESTS, ids=[m[0] for m in MANIFESTS])
def test_manifest_compiles(where: str, text: str) -> None:
    manifest = parse_manifest_text(text, source=where)
    assert manifest.modules, where
    for module in manifest.modules:
        compile_module(module)
