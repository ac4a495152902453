"""Micro-benchmark of PathMatcher: build time and cost per match as the route count grows.

Run: .venv/bin/python bench/matcher_bench.py

Each table holds whole "resources" of ten routes (static-only, `:param` at depths 2-5 and a
trailing `*`), so 10 / 10_000 / 100_000 routes are 1 / 1_000 / 10_000 resources. The request
list is fixed per table: the same shapes aimed at the first, middle and last resource, as hits,
405s and 404s at depths 1-5. A matcher whose cost grows with depth only shows flat columns.
Prints figures only; asserts nothing.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from proxy.errors import GatewayError
from proxy.routing.matcher import PathMatcher

SIZES = (10, 10_000, 100_000)
ROUTES_PER_RESOURCE = 10
RUNS = 7  # median of this many timed runs
MATCHES_PER_RUN = 30_000

Request = tuple[str, str]  # raw path, method


def resource_routes(r: int) -> list[tuple[str, str]]:
    """The ten (method, pattern) routes of resource r."""
    base = f"/resource{r}"
    return [
        ("GET", base),
        ("POST", base),
        ("GET", f"{base}/:id"),
        ("PUT", f"{base}/:id"),
        ("DELETE", f"{base}/:id"),
        ("GET", f"{base}/:id/sub1"),
        ("GET", f"{base}/:id/sub2"),
        ("GET", f"{base}/:id/sub1/:sid"),
        ("GET", f"{base}/:id/sub1/:sid/items"),
        ("GET", f"{base}/export/*"),
    ]


def build_table(size: int) -> tuple[PathMatcher[int], float]:
    entries = [
        (pattern, method, i)
        for i, (method, pattern) in enumerate(
            route for r in range(size // ROUTES_PER_RESOURCE) for route in resource_routes(r)
        )
    ]
    started = time.perf_counter()
    matcher = PathMatcher.build(entries)
    return matcher, time.perf_counter() - started


def requests_for(resources: int) -> dict[str, list[Request]]:
    """Hits, 405s and 404s at depths 1-5, aimed at the first, middle and last resource."""
    out: dict[str, list[Request]] = {"hit": [], "405": [], "404": []}
    for r in sorted({0, resources // 2, resources - 1}):
        b = f"/resource{r}"
        out["hit"] += [
            (b, "GET"),
            (f"{b}/1234", "GET"),
            (f"{b}/a%20b", "DELETE"),
            (f"{b}/1234/sub1", "GET"),
            (f"{b}/1234/sub1/99", "HEAD"),
            (f"{b}/1234/sub1/99/items", "GET"),
            (f"{b}/export/x/y/z", "GET"),
        ]
        out["405"] += [
            (b, "DELETE"),
            (f"{b}/1234", "POST"),
            (f"{b}/1234/sub2", "PUT"),
            (f"{b}/1234/sub1/99", "POST"),
            (f"{b}/1234/sub1/99/items", "DELETE"),
        ]
        out["404"] += [
            (f"/missing{r}", "GET"),
            (f"{b}/1234/nope", "GET"),
            (f"{b}/1234/sub1/99/nope", "GET"),
            (f"{b}/1234/sub1/99/items/x", "GET"),
            (f"{b}//", "GET"),
        ]
    return out


def ns_per_match(matcher: PathMatcher[int], requests: list[Request]) -> float:
    """Median over RUNS of the mean cost of one match (raising included for misses)."""
    match = matcher.match
    loops = max(1, MATCHES_PER_RUN // len(requests))
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter_ns()
        for _ in range(loops):
            for path, method in requests:
                try:
                    match(path, method)
                except GatewayError:
                    pass
        samples.append((time.perf_counter_ns() - started) / (loops * len(requests)))
    return statistics.median(samples)


def main() -> None:
    print(f"PathMatcher bench, {platform.python_implementation()} {platform.python_version()}")
    print(f"{'routes':>8} {'build s':>9} {'hit ns':>8} {'405 ns':>8} {'404 ns':>8}")
    for size in SIZES:
        matcher, build_s = build_table(size)
        requests = requests_for(size // ROUTES_PER_RESOURCE)
        costs = [ns_per_match(matcher, requests[kind]) for kind in ("hit", "405", "404")]
        print(f"{len(matcher):>8} {build_s:>9.3f} " + " ".join(f"{c:>8.0f}" for c in costs))


if __name__ == "__main__":
    main()
