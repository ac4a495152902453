"""Token buckets in Redis: one EVALSHA per request, pipelined across concurrent requests.

Strategy: a request's call is queued and the queue is flushed at the end of the current event
loop iteration, so every request that reached the limiter in the same tick shares one
pipeline (one round trip, one client call) instead of each paying for its own. Each EVALSHA
still runs atomically in Redis, in order, so batching changes no decision: the bound on
over-admission is zero. A batch in flight does not hold the next one back.

NOSCRIPT (a Redis restart or SCRIPT FLUSH) is answered by loading the script once and
re-running the calls that got it; the script is otherwise never sent again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import NoScriptError

from proxy.ratelimit.decision import Decision, decision_from
from proxy.ratelimit.script import TOKEN_BUCKET_LUA

MAX_BATCH = 512

_Call = tuple[str, int, int, int | str, "asyncio.Future[list[int]]"]


def bucket_keys(bucket: str) -> list[str]:
    """The script's two keys; `{bucket}` is the Cluster hash tag they share."""
    return [f"mg:{{{bucket}}}:m", f"mg:{{{bucket}}}:d"]


class RedisLimiter:
    __slots__ = ("_flush_scheduled", "_in_flight", "_queue", "client", "sha")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sha: str = client.register_script(TOKEN_BUCKET_LUA).sha
        self._queue: list[_Call] = []
        self._flush_scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()

    async def hit(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._queue.append((bucket, per_minute, per_day, "" if now_ms is None else now_ms, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        limited_by, remaining, reset_ms, retry_ms = await future
        return decision_from(limited_by, remaining, reset_ms, retry_ms, per_minute, per_day)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._run(batch)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:
                await self.client.script_load(TOKEN_BUCKET_LUA)
                retried = await self._run([batch[i] for i in missing])
                for i, result in zip(missing, retried, strict=True):
                    results[i] = result
        except BaseException as exc:  # the whole round trip failed: every caller learns why
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller gave up (budget spent) and used the failure policy
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result([int(v) for v in result])

    async def _run(self, batch: list[_Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for bucket, per_minute, per_day, now, _ in batch:
            minute, day = bucket_keys(bucket)
            pipe.execute_command("EVALSHA", self.sha, 2, minute, day, per_minute, per_day, now)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
