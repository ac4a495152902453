"""Token buckets in Redis: one EVALSHA per request, pipelined across concurrent requests.

Strategy: a request's call is queued and the queue is written at the end of the current event
loop iteration, so every request that reached the limiter in the same tick shares one write
on one dedicated connection (`RedisPipe`), whose replies are read continuously and matched to
callers in order. Each EVALSHA still runs atomically in Redis, in order, so batching changes
no decision: the bound on over-admission is zero. A batch in flight does not hold the next one
back; each batch has one timer for its budget.

NOSCRIPT (a Redis restart or SCRIPT FLUSH) is answered by loading the script once (one load
shared by every caller that got NOSCRIPT) and re-running those calls; the script is otherwise
never sent again.

The EVALSHA command is encoded by hand: it always has the same shape, and redis-py's generic
encoder cost more per request (about 20 µs, measured with cProfile under load) than everything
else the limiter does together. The redis-py client gives the connection's parameters (the
URL parsed as everywhere else) and the script's SHA.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from proxy.ratelimit.decision import Decision, decision_from
from proxy.ratelimit.redis_pipe import RedisPipe, encode_command
from proxy.ratelimit.script import TOKEN_BUCKET_LUA

_Call = tuple[bytes, "asyncio.Future[Any]"]
_SCRIPT_LOAD = encode_command(b"SCRIPT", b"LOAD", TOKEN_BUCKET_LUA.encode())


def bucket_keys(bucket: str) -> list[str]:
    """The script's two keys; `{bucket}` is the Cluster hash tag they share."""
    return [f"mg:{{{bucket}}}:m", f"mg:{{{bucket}}}:d"]


class RedisLimiter:
    __slots__ = ("_command_head", "_flush_scheduled", "_in_flight", "_loading", "_pipe",
                 "_queue", "client", "sha", "timeout")  # fmt: skip

    def __init__(self, client: Any, *, timeout: float = 0.005) -> None:
        self.client = client
        # The per-call budget, enforced once per batch: one timer for all the calls in it.
        self.timeout = timeout
        self.sha: str = client.register_script(TOKEN_BUCKET_LUA).sha
        # RESP array of 8: EVALSHA <sha> 2 <minute key> <day key> <limit> <quota> <now>
        self._command_head = (
            b"*8\r\n$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode() + b"\r\n$1\r\n2\r\n"
        )
        self._pipe = RedisPipe(client, timeout=timeout)
        self._queue: list[_Call] = []
        self._flush_scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loading: asyncio.Future[None] | None = None

    async def hit(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision:
        command = self._encode(bucket, per_minute, per_day, "" if now_ms is None else now_ms)
        try:
            reply = await self._call(command)
        except NoScriptError:  # rare (after a restart or SCRIPT FLUSH): its own budget
            await self._load_script()
            reply = await self._call(command)
        limited_by, remaining, reset_ms, retry_ms = reply
        return decision_from(
            int(limited_by), int(remaining), int(reset_ms), int(retry_ms), per_minute, per_day
        )

    def close(self) -> None:
        """Close the dedicated connection (the redis-py client is its owner's to close)."""
        self._pipe.close()

    def _call(self, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        futures = [future for _, future in batch]
        commands = b"".join(command for command, _ in batch)
        loop = asyncio.get_running_loop()
        if self._pipe.send_now(commands, futures):
            loop.call_later(self.timeout, self._pipe.expire, futures)
            return
        task = loop.create_task(self._connect_and_send(commands, futures))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _connect_and_send(self, commands: bytes, futures: list[asyncio.Future[Any]]) -> None:
        """Not connected: connect (a slow connect goes on in the background for later
        batches, but these callers' budget runs from now), then send."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._pipe.connect()
            if not self._pipe.send_now(commands, futures):
                raise RedisConnectionError("connection to Redis lost")
        except BaseException as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        asyncio.get_running_loop().call_later(self.timeout, self._pipe.expire, futures)

    async def _load_script(self) -> None:
        """SCRIPT LOAD, once for every caller that got NOSCRIPT meanwhile."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._script_load())
            self._loading.add_done_callback(self._loaded)
        await asyncio.shield(self._loading)

    async def _script_load(self) -> None:
        """SCRIPT LOAD on the limiter's own connection (it has just answered NOSCRIPT, so it
        is known to work; a pooled one may be stale after the restart that lost the script)."""
        budget = self.timeout * 10
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(budget):
            await self._pipe.connect()
        if not self._pipe.send_now(_SCRIPT_LOAD, [future]):
            raise RedisConnectionError("connection to Redis lost")
        asyncio.get_running_loop().call_later(budget, self._pipe.expire, [future])
        await future

    def _loaded(self, future: asyncio.Future[None]) -> None:
        self._loading = None
        if not future.cancelled():
            future.exception()  # its awaiters have it; nothing left unretrieved

    def _encode(self, bucket: str, per_minute: int, per_day: int, now: int | str) -> bytes:
        parts = [self._command_head]
        for arg in (*bucket_keys(bucket), str(per_minute), str(per_day), str(now)):
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    def __repr__(self) -> str:
        return f"<RedisLimiter {self._pipe!r} queued={len(self._queue)}>"
