"""Token buckets in Redis: one EVALSHA per request.

redis-py's Script object runs the script by EVALSHA and, when Redis answers NOSCRIPT (a
restart or SCRIPT FLUSH), loads it and retries, so the script is sent once per server life.
"""

from __future__ import annotations

from typing import Any

from proxy.ratelimit.decision import Decision, decision_from
from proxy.ratelimit.script import TOKEN_BUCKET_LUA


def bucket_keys(bucket: str) -> list[str]:
    """The script's two keys; `{bucket}` is the Cluster hash tag they share."""
    return [f"mg:{{{bucket}}}:m", f"mg:{{{bucket}}}:d"]


class RedisLimiter:
    __slots__ = ("client", "script")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.script = client.register_script(TOKEN_BUCKET_LUA)

    async def hit(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision:
        args = (per_minute, per_day, "" if now_ms is None else now_ms)
        limited_by, remaining, reset_ms, retry_ms = await self.script(
            keys=bucket_keys(bucket), args=args
        )
        return decision_from(
            int(limited_by), int(remaining), int(reset_ms), int(retry_ms), per_minute, per_day
        )
