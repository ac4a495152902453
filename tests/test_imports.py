"""No import cycle between proxy's packages, so each subsystem can be read, tested and replaced
from the bottom up (the server uses the executor's client; the executor never uses the server).

Every import in every module under proxy/ counts, at module level and inside functions (an
import deferred into a function to dodge a cycle is still that cycle), except those under
`if TYPE_CHECKING:`, which never run. A package here is a subpackage (proxy.server) or a
top-level module (proxy.errors); imports within one package are its own business.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

PROXY = Path(__file__).resolve().parent.parent / "proxy"

# Imports that close a cycle today, each to be removed by issue 14 (its item 5: "no package
# cycle remains"); one that is gone must leave this list too, so it only shrinks.
PENDING: dict[tuple[str, str], str] = {}

Edges = dict[tuple[str, str], list[str]]  # (importer, imported) -> ["proxy/a/b.py:12", ...]


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def runtime_imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported module, line) of each proxy import in `path` that runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per extra dot
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((target, node.lineno))
    return [(target, line) for target, line in found if target.split(".")[0] == "proxy"]


def package_edges() -> Edges:
    edges: Edges = defaultdict(list)
    for path in sorted(PROXY.rglob("*.py")):
        parts = path.relative_to(PROXY.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for target, line in runtime_imports(path, module):
            importer, imported = package_of(module), package_of(target)
            # `proxy` itself (its __init__) imports nothing: no cycle runs through it.
            if importer != imported and imported != "proxy":
                edges[importer, imported].append(f"{path.relative_to(PROXY.parent)}:{line}")
    return edges


def cycles(edges: Edges) -> list[str]:
    """One cycle through each group of packages that import each other, with the imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, imported in edges:
        graph[importer].add(imported)

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reach = {node: reachable(node) for node in list(graph)}
    found, done = [], set()
    for node in sorted(reach):
        if node in done or node not in reach[node]:
            continue
        group = {other for other in reach[node] if node in reach.get(other, set())}
        done |= group
        cycle = _describe(_path_back(node, graph, group), edges)
        found.append(cycle if len(group) == 2 else f"among {', '.join(sorted(group))}: {cycle}")
    return found


def _path_back(start: str, graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way from `start` back to itself inside `group` (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


def _describe(path: list[str], edges: Edges) -> str:
    steps = [f"  {a} -> {b}: {', '.join(edges[a, b])}" for a, b in pairwise(path)]
    return " -> ".join(path) + "\n" + "\n".join(steps)


def test_no_import_cycle_between_packages() -> None:
    edges = package_edges()
    assert ("proxy.server", "proxy.executor") in edges  # the walk sees imports at all
    remaining = {edge: where for edge, where in edges.items() if edge not in PENDING}
    found = cycles(remaining)
    assert not found, "import cycles between packages:\n" + "\n".join(found)


def test_every_pending_import_still_exists() -> None:
    edges = package_edges()
    gone = [f"{a} -> {b}" for a, b in PENDING if (a, b) not in edges]
    assert not gone, f"no longer imported, remove from PENDING: {', '.join(gone)}"


def test_a_cycle_is_found_and_named_with_its_imports() -> None:
    edges = {
        ("proxy.server", "proxy.executor"): ["proxy/server/pipeline.py:37"],
        ("proxy.executor", "proxy.server"): ["proxy/executor/service.py:39"],
        ("proxy.executor", "proxy.errors"): ["proxy/executor/service.py:30"],
    }
    assert cycles(edges) == [
        "proxy.executor -> proxy.server -> proxy.executor\n"
        "  proxy.executor -> proxy.server: proxy/executor/service.py:39\n"
        "  proxy.server -> proxy.executor: proxy/server/pipeline.py:37"
    ]


def test_function_level_imports_count_and_type_only_ones_do_not(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from proxy.errors import GatewayError\n"
        "if TYPE_CHECKING:\n"
        "    from proxy.settings import Settings\n"
        "def run():\n"
        "    from proxy.server.app import build_admin_app\n"
        "    from . import sibling\n"
    )
    assert runtime_imports(source, "proxy.executor.mod") == [
        ("proxy.errors", 2),
        ("proxy.server.app", 6),
        ("proxy.executor", 7),
    ]
