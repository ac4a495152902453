"""metrics.BoundLabels: a metric's children bound once per label tuple, counting as `.labels()`."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from proxy.observability import metrics


def _counter() -> tuple[Counter, CollectorRegistry]:
    registry = CollectorRegistry()
    counter = Counter("calls", "Calls by kind and side.", ["kind", "side"], registry=registry)
    return counter, registry


def test_a_bound_child_is_the_labelled_child_and_counts_the_same() -> None:
    counter, registry = _counter()
    bound = metrics.BoundLabels(counter)
    bound("a", 200).inc()
    bound("a", 200).inc()
    counter.labels(kind="a", side="200").inc()
    assert bound("a", 200) is counter.labels(kind="a", side="200")
    assert registry.get_sample_value("calls_total", {"kind": "a", "side": "200"}) == 3.0
    assert repr(bound) == "<BoundLabels calls children=1>"


def test_past_the_bound_children_are_still_counted_but_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "_MAX_BOUND_CHILDREN", 2)
    counter, registry = _counter()
    bound = metrics.BoundLabels(counter)
    for kind in ("a", "b", "c", "c"):
        bound(kind, "x").inc()
    assert repr(bound) == "<BoundLabels calls children=2>"
    assert registry.get_sample_value("calls_total", {"kind": "c", "side": "x"}) == 2.0
