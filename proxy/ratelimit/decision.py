"""A rate-limit decision and the headers it becomes.

`X-RateLimit-Reset` and `Retry-After` are delta-seconds (whole seconds from now, rounded up),
the format of Retry-After and of the IETF RateLimit header fields draft: they need no clock
agreement between client and gateway, unlike an epoch timestamp.
"""

from __future__ import annotations

MINUTE_MS = 60_000
DAY_MS = 86_400_000

ALLOWED = 0
LIMITED_RATE = 1
LIMITED_QUOTA = 2


class Decision:
    """What the limiter decided for one request (a plain slotted class: one per request)."""

    __slots__ = ("allowed", "limit", "limited_by", "remaining", "reset_ms", "retry_after_ms")

    def __init__(
        self,
        allowed: bool,
        limited_by: int,  # ALLOWED, LIMITED_RATE or LIMITED_QUOTA
        limit: int,  # the per-minute limit, or the daily quota when that is what refused
        remaining: int,
        reset_ms: int,  # until the bucket is full again (the quota: until 00:00 UTC)
        retry_after_ms: int,  # until one request would be admitted (0 when admitted)
    ) -> None:
        self.allowed = allowed
        self.limited_by = limited_by
        self.limit = limit
        self.remaining = remaining
        self.reset_ms = reset_ms
        self.retry_after_ms = retry_after_ms

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(-(-self.reset_ms // 1000)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, -(-self.retry_after_ms // 1000)))
        return headers

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, limited_by={self.limited_by}, limit={self.limit}, "
            f"remaining={self.remaining}, reset_ms={self.reset_ms}, "
            f"retry_after_ms={self.retry_after_ms})"
        )


def decision_from(limited_by: int, remaining: int, reset_ms: int, retry_ms: int,
                  per_minute: int, per_day: int) -> Decision:  # fmt: skip
    if limited_by == LIMITED_QUOTA:
        return Decision(False, LIMITED_QUOTA, per_day, 0, reset_ms, retry_ms)
    return Decision(limited_by == ALLOWED, limited_by, per_minute, remaining, reset_ms, retry_ms)
