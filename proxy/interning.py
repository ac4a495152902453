"""One object per distinct value, for the values many loaded rows repeat.

Postgres hands every row its own string objects: 100k routes carry 100k copies of "GET" and
of each scope list, 100k cached keys 100k copies of their 100 module ids. The loaders pass such
values through `interned`, which returns the first equal object it saw (bench/memory_bench.py:
about 30 MiB less for 100k routes, 20 MiB less for 100k keys). Bounded and least-recently-used
first out, so ids of deleted modules do not accumulate; a value evicted is merely copied again.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import TypeVar, cast

DISTINCT_VALUES = 16_384

_T = TypeVar("_T", bound=Hashable)


@functools.lru_cache(maxsize=DISTINCT_VALUES, typed=True)
def _first(value: Hashable) -> Hashable:
    return value


def interned(value: _T) -> _T:
    """`value`, or an equal object seen before (a str, or a tuple of str, for example)."""
    return cast(_T, _first(value))
