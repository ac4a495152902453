"""Token buckets in process: the embedded default, and the `local` fallback when Redis fails.

The same arithmetic as the Lua script, on this process's clock. Buckets live in a bounded LRU:
an evicted bucket comes back full, so eviction can only admit more (at most one bucket's
capacity per eviction), never refuse a caller who had tokens left.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from proxy.ratelimit.decision import (
    ALLOWED,
    DAY_MS,
    LIMITED_QUOTA,
    LIMITED_RATE,
    MINUTE_MS,
    Decision,
    decision_from,
)


def _wall_ms() -> int:
    return int(time.time() * 1000)


class LocalLimiter:
    __slots__ = ("_buckets", "_clock", "_days", "capacity")

    def __init__(self, *, capacity: int, clock: Callable[[], int] = _wall_ms) -> None:
        self.capacity = capacity
        self._clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # bucket -> [tokens, ts]
        self._days: OrderedDict[str, list[int]] = OrderedDict()  # bucket -> [day, used]

    async def hit(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision:
        return self.hit_now(bucket, per_minute, per_day, now_ms)

    def hit_now(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision:
        now = self._clock() if now_ms is None else now_ms
        rate = per_minute / MINUTE_MS
        state = self._buckets.get(bucket)
        if state is None:
            tokens = float(per_minute)
        else:
            tokens, ts = state
            if now > ts:
                tokens = min(per_minute, tokens + (now - ts) * rate)

        day, until_midnight = divmod(now, DAY_MS)
        until_midnight = DAY_MS - until_midnight
        quota = None
        if per_day > 0:
            quota = self._days.get(bucket)
            if quota is None or quota[0] != day:
                quota = [day, 0]
            if quota[1] >= per_day:
                return decision_from(
                    LIMITED_QUOTA, 0, until_midnight, until_midnight, per_minute, per_day
                )

        if tokens < 1:
            retry = math.ceil((1 - tokens) / rate)
            reset = math.ceil((per_minute - tokens) / rate)
            self._store(self._buckets, bucket, [tokens, now])
            return decision_from(LIMITED_RATE, 0, reset, retry, per_minute, per_day)

        tokens -= 1
        self._store(self._buckets, bucket, [tokens, now])
        if quota is not None:
            quota[1] += 1
            self._store(self._days, bucket, quota)
        reset = math.ceil((per_minute - tokens) / rate)
        return decision_from(ALLOWED, math.floor(tokens), reset, 0, per_minute, per_day)

    def _store(self, table: OrderedDict[str, list[float]] | OrderedDict[str, list[int]],
               bucket: str, value: list[float] | list[int]) -> None:  # fmt: skip
        table[bucket] = value  # type: ignore[assignment]
        table.move_to_end(bucket)
        if len(table) > self.capacity:
            table.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
