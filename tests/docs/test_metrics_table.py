"""The metrics table in docs/operating.md lists exactly the metrics modgate registers.

Strategy: import every module of the `proxy` package, so a metric defined anywhere is
registered, then read prometheus-client's default registry (what /metrics serves) and compare
its `modgate_` families with the first column of the manual's table.
"""

from __future__ import annotations

import importlib
import pkgutil

from prometheus_client import REGISTRY

import proxy
from tests.docs.markdown import DOCS, first_cell_names

MANUAL_PAGE = DOCS / "operating.md"


def registered_metrics() -> set[str]:
    """Names of modgate's metrics as scraped (`_total` on counters), from every proxy module."""
    for module in pkgutil.walk_packages(proxy.__path__, "proxy."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("modgate_"):
            # prometheus-client names a counter's family without the `_total` it exports.
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_metrics_are_registered() -> None:
    assert "modgate_requests_total" in registered_metrics()


def test_manual_table_lists_exactly_the_registered_metrics() -> None:
    rows = first_cell_names(MANUAL_PAGE.read_text(), r"modgate_\w+")
    assert len(rows) == len(set(rows)), f"a metric has two rows in {MANUAL_PAGE.name}"
    registered = registered_metrics()
    assert set(rows) - registered == set(), f"{MANUAL_PAGE.name} lists metrics the code lacks"
    assert registered - set(rows) == set(), f"metrics missing from {MANUAL_PAGE.name}"
