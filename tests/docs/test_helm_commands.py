"""The Helm instructions work as written: every `helm install` the docs show renders, and every
Secret key the rendered pods read is one the docs' `kubectl create secret` creates.

Strategy: the shell blocks of the manual and of the chart's README are parsed, not copied: each
`helm install` becomes values (its `--set` flags, as Helm types them) and is rendered offline
with helm-python-sdk, as tests/deploy/test_chart.py renders the chart. Every `secretKeyRef` in
the result must name a Secret that the same page creates (with that key, in that namespace) or
one the chart renders itself. A flag this parser does not know fails the test, so a new kind of
instruction cannot slip past unchecked.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.markdown import MANUAL, ROOT, code_blocks, shell_commands

try:
    import helm_python
except ImportError as exc:  # pragma: no cover - a broken environment, not a skip
    raise ImportError(
        "tests/docs/test_helm_commands.py needs the helm-python-sdk package "
        "(.venv/bin/pip install helm-python-sdk)"
    ) from exc

CHART_README = ROOT / "deploy" / "helm" / "modgate" / "README.md"
PAGES = (*MANUAL, CHART_README)


@dataclass
class SecretCommand:
    name: str
    namespace: str
    keys: set[str]


@dataclass
class HelmInstall:
    release: str
    chart: Path
    namespace: str
    values: dict[str, Any] = field(default_factory=dict)


def _helm_scalar(text: str) -> Any:
    """A `--set` value as Helm types it: booleans, integers, null, else a string."""
    if text in {"true", "false"}:
        return text == "true"
    if text == "null":
        return None
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


def _set(values: dict[str, Any], assignment: str, *, typed: bool = True) -> None:
    for part in re.split(r"(?<!\\),", assignment):
        path, _, raw = part.partition("=")
        *parents, leaf = path.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = _helm_scalar(raw) if typed else raw


def parse_secret(argv: list[str]) -> SecretCommand:
    namespace, name, keys = "default", None, set()
    args = iter(argv[1:])
    for arg in args:
        if arg in {"-n", "--namespace"}:
            namespace = next(args)
        elif arg.startswith("--namespace="):
            namespace = arg.partition("=")[2]
        elif arg.startswith(("--from-literal=", "--from-file=")):
            keys.add(arg.partition("=")[2].partition("=")[0])
        elif arg in {"create", "secret", "generic"}:
            continue
        elif not arg.startswith("-") and name is None:
            name = arg
        else:
            raise AssertionError(f"kubectl flag the docs test does not know: {arg}")
    assert name, f"no Secret name in {shlex.join(argv)}"
    return SecretCommand(name, namespace, keys)


def parse_install(argv: list[str]) -> HelmInstall:
    positional: list[str] = []
    namespace, values = "default", {}
    args = iter(argv[2:])
    for arg in args:
        if arg in {"-n", "--namespace"}:
            namespace = next(args)
        elif arg == "--set":
            _set(values, next(args))
        elif arg == "--set-string":
            _set(values, next(args), typed=False)
        elif arg in {"-f", "--values"}:
            path = ROOT / next(args)
            assert path.is_file(), f"the docs install with values from {path}, which is missing"
            values.update(yaml.safe_load(path.read_text()) or {})
        elif arg.startswith("-"):
            raise AssertionError(f"helm flag the docs test does not know: {arg}")
        else:
            positional.append(arg)
    release, chart = positional
    return HelmInstall(release, ROOT / chart, namespace, values)


@dataclass
class Page:
    """What one page tells a reader to run: Secrets created, images pushed, charts installed."""

    secrets: list[SecretCommand] = field(default_factory=list)
    pushed: set[str] = field(default_factory=set)
    installs: list[HelmInstall] = field(default_factory=list)


def read_page(path: Path) -> Page:
    page = Page()
    for block in code_blocks(path.read_text(), "sh"):
        for command in shell_commands(block):
            argv = shlex.split(command)
            if argv[:1] == ["kubectl"] and "create" in argv and "secret" in argv:
                page.secrets.append(parse_secret(argv))
            elif argv[:2] == ["docker", "push"]:
                page.pushed.add(argv[2])
            elif argv[:2] == ["helm", "install"]:
                page.installs.append(parse_install(argv))
    return page


INSTALLS = [
    (f"{path.relative_to(ROOT)}#{number}", install, page)
    for path in PAGES
    for page in [read_page(path)]
    for number, install in enumerate(page.installs, 1)
]


def secret_key_refs(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]
        for value in node.values():
            yield from secret_key_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from secret_key_refs(value)


def _render(install: HelmInstall) -> list[dict[str, Any]]:
    assert (install.chart / "Chart.yaml").is_file(), f"no chart at {install.chart}"
    chart = helm_python.Chart.load(install.chart)
    rendered = chart.render(
        install.values, name=install.release, namespace=install.namespace, is_install=True
    )
    docs = []
    for path, text in rendered.items():
        if not path.endswith("NOTES.txt"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def test_the_docs_show_the_whole_story() -> None:
    pages = {where.partition("#")[0] for where, _, _ in INSTALLS}
    assert {"README.md", "docs/deploying.md", str(CHART_README.relative_to(ROOT))} <= pages
    for path in (ROOT / "README.md", ROOT / "docs" / "deploying.md"):
        page = read_page(path)
        assert page.pushed, f"{path.name}: no `docker push` before the install"
        assert page.secrets, f"{path.name}: no `kubectl create secret` before the install"


@pytest.mark.parametrize(("where", "install", "page"), INSTALLS, ids=[i[0] for i in INSTALLS])
def test_every_secret_key_the_pods_read_is_created(
    where: str, install: HelmInstall, page: Page
) -> None:
    docs = _render(install)
    created = {s.name: s for s in page.secrets}
    for secret in page.secrets:
        assert secret.namespace == install.namespace, f"{where}: {secret.name} in another namespace"
    chart_secrets = {
        doc["metadata"]["name"]: set(doc.get("data", {})) | set(doc.get("stringData", {}))
        for doc in docs
        if doc["kind"] == "Secret"
    }
    refs = [ref for doc in docs for ref in secret_key_refs(doc)]
    assert refs, f"{where}: the rendered chart reads no Secret; the docs create one for nothing"
    for ref in refs:
        if ref["name"] in created:
            keys = created[ref["name"]].keys
            assert ref["key"] in keys, (
                f"{where}: pods read key {ref['key']!r} of Secret {ref['name']!r}; "
                f"the docs create it with {sorted(keys)}"
            )
        else:
            assert ref["key"] in chart_secrets.get(ref["name"], set()), (
                f"{where}: pods read Secret {ref['name']!r} key {ref['key']!r}, "
                "which neither the docs nor the chart create"
            )


@pytest.mark.parametrize(("where", "install", "page"), INSTALLS, ids=[i[0] for i in INSTALLS])
def test_the_pods_run_the_image_the_docs_pushed(
    where: str, install: HelmInstall, page: Page
) -> None:
    image = install.values.get("image", {})
    assert "repository" in image, f"{where}: set image.repository to the pushed image"
    expected = f"{image['repository']}:{image.get('tag', '')}"
    if page.pushed:
        assert expected in page.pushed, f"{where}: installs {expected}, pushes {page.pushed}"
    for doc in _render(install):
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            assert container["image"].startswith(expected.rstrip(":")), (where, container["image"])
