"""Token buckets in process: the embedded default, and the mirror of Redis's buckets that the
`local` fallback continues from.

The same arithmetic as the Lua script, on this process's clock. Buckets live in a bounded LRU
(`local_buckets_max`).

Strategy (the mirror, with Redis configured):
- Every Redis reply leaves the bucket's state here: its tokens, when, and the day's count.
- A request Redis did not decide (its call failed or timed out, or the circuit is open) is
  decided from that state, not from a fresh bucket: this process takes its share, the limit
  divided by `replicas` (gateway replicas x worker processes), of what is left, refilling at its
  share of the rate. Tokens here are counted in units of the whole limit, so a local admission
  spends limit / share of them: every process taking its share empties the bucket together.
- Each local admission is a debt of the bucket's, carried by the next call that reaches Redis
  for it (the script charges it; see script.py), so coming back to Redis mints nothing. A call
  carrying a debt that fails gives it back (`restore`): it is charged again later, twice if the
  failed call did reach Redis (conservative).
- Eviction forgets a bucket: it comes back full, and an unpaid debt is never charged, so each
  eviction can admit at most one bucket's capacity more, never refuse a caller with tokens left.
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

# Token counts are sums of fractions (limit / share); a millionth of a token absorbs the
# rounding of those sums and decides nothing else.
_EPSILON = 1e-6


def _wall_ms() -> int:
    return int(time.time() * 1000)


class BucketState:
    """One caller's bucket as this process last knew it."""

    __slots__ = ("at", "day", "debt", "tokens", "used")

    def __init__(self, tokens: float, at: int, day: int, used: float) -> None:
        self.tokens = tokens  # at `at` (ms, this process's clock), in units of the whole limit
        self.at = at
        self.day = day  # UTC day number of `used`
        self.used = used  # requests counted that day (the whole fleet's, as far as known)
        self.debt = 0  # requests admitted here without Redis, not yet charged to it

    def __repr__(self) -> str:
        return (
            f"BucketState(tokens={self.tokens:.3f}, at={self.at}, day={self.day}, "
            f"used={self.used:g}, debt={self.debt})"
        )


class LocalLimiter:
    __slots__ = ("_buckets", "_clock", "capacity", "replicas")

    def __init__(
        self, *, capacity: int, replicas: int = 1, clock: Callable[[], int] = _wall_ms
    ) -> None:
        self.capacity = capacity
        self.replicas = replicas  # processes sharing the limits when Redis is not deciding
        self._clock = clock
        self._buckets: OrderedDict[str, BucketState] = OrderedDict()

    async def hit(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision:
        return self.hit_now(bucket, per_minute, per_day, now_ms)

    def hit_now(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision:
        """The embedded mode's decision: this process alone holds the bucket."""
        now = self._clock() if now_ms is None else now_ms
        return self._decide(bucket, now, per_minute, per_day, per_minute, per_day, charge=False)

    def fallback(self, bucket: str, per_minute: int, per_day: int) -> Decision:
        """Redis did not decide: this process's share of the mirrored bucket; an admission
        is owed to Redis."""
        share_minute = self._share(per_minute)
        share_day = self._share(per_day) if per_day > 0 else 0
        now = self._clock()
        return self._decide(bucket, now, per_minute, per_day, share_minute, share_day, charge=True)

    def record(self, bucket: str, per_minute: int, per_day: int, tokens: float, used: int) -> None:
        """A Redis reply: the bucket's state now, less what this process admitted since that
        Redis does not know of yet (a debt taken after this call was sent)."""
        now = self._clock()
        state = self._buckets.get(bucket)
        if state is None:
            self._store(bucket, BucketState(tokens, now, now // DAY_MS, used))
            return
        self._buckets.move_to_end(bucket)
        state.at = now
        state.day = now // DAY_MS
        if not state.debt:
            state.tokens, state.used = tokens, used
            return
        state.tokens = max(0.0, tokens - state.debt * per_minute / self._share(per_minute))
        state.used = used + (state.debt * per_day / self._share(per_day) if per_day > 0 else 0)

    def carry(self, bucket: str, per_minute: int) -> tuple[int, str, int]:
        """What the next Redis call for `bucket` carries (script ARGV[4..6]): the debt, which
        it takes, and the mirrored tokens (refilled to now) and day's count."""
        state = self._buckets.get(bucket)
        if state is None:
            return 0, "", 0
        now = self._clock()
        tokens = state.tokens
        if now > state.at:
            tokens = min(per_minute, tokens + (now - state.at) * per_minute / MINUTE_MS)
        used = math.ceil(state.used) if state.day == now // DAY_MS else 0
        debt, state.debt = state.debt, 0
        return debt, repr(tokens), used

    def restore(self, bucket: str, debt: int) -> None:
        """A call that carried `debt` failed: owe it again (charged twice if it was applied)."""
        state = self._buckets.get(bucket)
        if state is not None:
            state.debt += debt

    def state(self, bucket: str) -> BucketState | None:
        return self._buckets.get(bucket)

    def _share(self, limit: int) -> int:
        return max(1, limit // self.replicas)

    def _decide(self, bucket: str, now: int, per_minute: int, per_day: int,
                shown_minute: int, shown_day: int, *, charge: bool) -> Decision:  # fmt: skip
        rate = per_minute / MINUTE_MS  # tokens (of the whole limit) per ms
        cost = per_minute / shown_minute  # what one admission spends: 1, or limit / share
        # Exact in the embedded mode (the script's arithmetic); a share's sums need the margin.
        eps = _EPSILON if charge else 0.0
        day, until_midnight = divmod(now, DAY_MS)
        until_midnight = DAY_MS - until_midnight
        state = self._buckets.get(bucket)
        if state is None:
            state = BucketState(float(per_minute), now, day, 0)
            self._store(bucket, state)
        else:
            self._buckets.move_to_end(bucket)
            if now > state.at:
                state.tokens = min(per_minute, state.tokens + (now - state.at) * rate)
                state.at = now
            if state.day != day:
                state.day, state.used = day, 0

        if per_day > 0:
            day_cost = per_day / shown_day
            if state.used + day_cost > per_day + eps:
                return decision_from(
                    LIMITED_QUOTA, 0, until_midnight, until_midnight, shown_minute, shown_day
                )

        tokens = state.tokens
        if tokens + eps < cost:
            retry = math.ceil((cost - tokens) / rate)
            reset = math.ceil((per_minute - tokens) / rate)
            return decision_from(LIMITED_RATE, 0, reset, retry, shown_minute, shown_day)

        state.tokens = tokens = max(0.0, tokens - cost)
        if per_day > 0:
            state.used += per_day / shown_day
        if charge:
            state.debt += 1
        reset = math.ceil((per_minute - tokens) / rate)
        remaining = math.floor(tokens / cost + eps)
        return decision_from(ALLOWED, remaining, reset, 0, shown_minute, shown_day)

    def _store(self, bucket: str, state: BucketState) -> None:
        self._buckets[bucket] = state
        if len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)

    def __repr__(self) -> str:
        size = f"{len(self._buckets)}/{self.capacity}"
        return f"<LocalLimiter {size} buckets, replicas={self.replicas}>"
