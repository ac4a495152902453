"""Memory budgets: the bytes a piece of code leaves allocated, measured with tracemalloc.

A budget test builds many items inside `retained_bytes` and asserts the bytes per item stay
under a figure set from a measurement plus a margin. It guards the memory a worker holds
(bench/memory_bench.py: 100k routes and 100k keys) without pinning how it is saved. Only
blocks allocated inside the call and still alive after it (and a collection) count, so the
inputs must be created inside `build` too, and what `build` keeps is what its result holds.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retained_bytes(build: Callable[[], T]) -> tuple[T, int]:
    """What `build()` returns, and the bytes allocated during the call that are still held."""
    gc.collect()
    already = tracemalloc.is_tracing()  # e.g. PYTHONTRACEMALLOC: measure, leave it running
    if not already:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if not already:
            tracemalloc.stop()
    return result, after - before
