"""A rate-limit decision and the headers it becomes.

`X-RateLimit-Reset` and `Retry-After` are delta-seconds (whole seconds from now, rounded up),
the format of Retry-After and of the IETF RateLimit header fields draft: they need no clock
agreement between client and gateway, unlike an epoch timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000
DAY_MS = 86_400_000

ALLOWED = 0
LIMITED_RATE = 1
LIMITED_QUOTA = 2


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limited_by: int  # ALLOWED, LIMITED_RATE or LIMITED_QUOTA
    limit: int  # the per-minute limit, or the daily quota when that is what refused
    remaining: int
    reset_ms: int  # until the bucket is full again (or, for the quota, until 00:00 UTC)
    retry_after_ms: int  # until one request would be admitted (0 when admitted)

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(_seconds(self.reset_ms)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, _seconds(self.retry_after_ms)))
        return headers


def _seconds(ms: int) -> int:
    return -(-ms // 1000)  # ceiling: never tell a client to come back too early


def decision_from(limited_by: int, remaining: int, reset_ms: int, retry_ms: int,
                  per_minute: int, per_day: int) -> Decision:  # fmt: skip
    if limited_by == LIMITED_QUOTA:
        return Decision(False, LIMITED_QUOTA, per_day, 0, reset_ms, retry_ms)
    return Decision(limited_by == ALLOWED, limited_by, per_minute, remaining, reset_ms, retry_ms)
