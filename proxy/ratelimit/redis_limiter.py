"""Token buckets in Redis: one EVALSHA per request, pipelined, on connections opened ahead.

Strategy:
- Connections: `connections` of them, opened and the script loaded (SCRIPT LOAD) by `start()`,
  which the gateway awaits before it turns ready, and again in the background, with backoff,
  whenever one is lost (the idle ones are checked then: a Redis restart closes them all). A
  call never opens a connection or loads the script: with no
  connection open it fails at once (`NotConnected`; the failure policy decides without a
  wait). So the budget measures Redis's answer, never connection setup.
- Batches: calls are queued and flushed at the end of the event loop iteration onto an idle
  connection, so every request that reached the limiter in the same tick shares one write and
  one round trip. With every connection busy, calls wait for the first one free and go out
  together. Each EVALSHA still runs atomically in Redis, in order, so batching changes no
  decision.
- Budget: `timeout` seconds from the tick a call was queued (one timer per tick). Past it the
  caller gets TimeoutError and the failure policy decides, but the batch's replies are still
  read, up to `read_limit`, so the connection stays in step and in use, and a late reply still
  updates the mirror. Only a connection silent for `read_limit` is dropped (and reopened).
  A budget timer that fires late means this process did not get a CPU in time (a busy host),
  and the reply may be waiting unread: the calls get that much longer, at most one budget.
- NOSCRIPT (SCRIPT FLUSH on a live server): the calls that got it are sent again as EVAL,
  which runs and caches the script in that one round trip. A reopened connection loads the
  script before its first call, so a restarted Redis costs no call a NOSCRIPT.
- Mirror (a `LocalLimiter`, optional): every call carries what the mirror owes Redis for its
  bucket and the mirror's view of it (script.py, ARGV[4..6]); every reply, late ones too,
  leaves the bucket's state in the mirror, which the `local` fallback continues from. A call
  whose fate is unknown (its connection failed) gives its debt back, so it is charged again:
  twice at worst, never zero times. A call never sent gives it back too: exactly once.

redis-py provides each connection (AUTH, SELECT, TLS, hiredis parsing, error mapping); its own
pool is not used, because it opens connections on demand, inside a call. The EVALSHA command
is encoded by hand: it always has the same shape, and redis-py's generic encoder cost more per
request (about 20 µs, measured with cProfile under load) than everything else the limiter does.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from proxy.observability import metrics
from proxy.ratelimit.decision import Decision, decision_from
from proxy.ratelimit.local_limiter import LocalLimiter
from proxy.ratelimit.script import TOKEN_BUCKET_LUA
from proxy.retry import Backoff

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("modgate.ratelimit")

# The default budget of one call (settings: redis_timeout_seconds); docs/rate-limits.md,
# "The budget".
DEFAULT_TIMEOUT = 0.25
CONNECTIONS = 4
MAX_BATCH = 512
SETUP_TIMEOUT = 2.0  # to connect, authenticate and load the script, per attempt
STARVED = 0.005  # a timer this late means the process was not running (a busy host)
RECONNECT_MAX_SECONDS = 2.0


class NotConnected(RedisConnectionError):
    """No connection to Redis is open (they are being reopened in the background)."""


def bucket_keys(bucket: str) -> list[str]:
    """The script's two keys; `{bucket}` is the Cluster hash tag they share."""
    return [f"mg:{{{bucket}}}:m", f"mg:{{{bucket}}}:d"]


def _head(command: bytes, script: bytes) -> bytes:
    """RESP array of 11: <command> <script> 2 <minute key> <day key> and six ARGV."""
    return b"*11\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$1\r\n2\r\n" % (
        len(command), command, len(script), script,
    )  # fmt: skip


class _Call:
    __slots__ = ("bucket", "future", "mirror_tokens", "mirror_used", "now", "per_day",
                 "per_minute", "queued", "spent")  # fmt: skip

    def __init__(self, bucket: str, per_minute: int, per_day: int, now: int | str,
                 carry: tuple[int, str, int], queued: float,
                 future: asyncio.Future[tuple[int, int, int, int]]) -> None:  # fmt: skip
        self.bucket = bucket
        self.per_minute = per_minute
        self.per_day = per_day
        self.now = now
        self.spent, self.mirror_tokens, self.mirror_used = carry
        self.queued = queued
        self.future = future


_NO_CARRY = (0, "", 0)


class RedisLimiter:
    __slots__ = ("_backoff", "_connector", "_eval_head", "_evalsha_head", "_flush_scheduled",
                 "_idle", "_new", "_open", "_tasks", "_tick", "_waiting", "client", "closed",
                 "connections", "mirror", "read_limit", "sha", "started", "timeout")  # fmt: skip

    def __init__(
        self,
        client: Redis,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        mirror: LocalLimiter | None = None,
        connections: int = CONNECTIONS,
    ) -> None:
        self.client = client  # its pool's parameters make our connections; it is its owner's
        self.timeout = timeout
        self.read_limit = max(1.0, timeout * 10)
        self.mirror = mirror
        self.connections = connections
        self.sha: str = client.register_script(TOKEN_BUCKET_LUA).sha
        self._evalsha_head = _head(b"EVALSHA", self.sha.encode())
        self._eval_head = _head(b"EVAL", TOKEN_BUCKET_LUA.encode())
        self._idle: list[Any] = []
        self._open = 0  # idle and busy
        self._new: list[_Call] = []  # queued in this tick
        self._waiting: list[_Call] = []  # past their tick, waiting for a connection
        self._tick = 0.0
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._connector: asyncio.Task[None] | None = None
        self._backoff = Backoff(maximum=RECONNECT_MAX_SECONDS)
        self.started = False  # start() has run: connections open, or being opened in background
        self.closed = False

    @property
    def connected(self) -> bool:
        return self._open > 0

    @property
    def idle(self) -> int:
        """Connections open and free for the next batch."""
        return len(self._idle)

    async def start(self) -> bool:
        """Open the connections and load the script; False when Redis cannot be reached now
        (then they are opened in the background, and calls fail at once meanwhile)."""
        while self._open < self.connections:
            try:
                connection = await self._connect()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("Redis rate limiter cannot connect (%s); retrying in the background",
                            _describe(exc))  # fmt: skip
                self._reconnect_soon()
                break
            self._add(connection)
        self.started = True
        return self.connected

    async def close(self) -> None:
        self.closed = True
        tasks = [*self._tasks, *([self._connector] if self._connector else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail([*self._waiting, *self._new], NotConnected)
        self._waiting, self._new = [], []
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect(nowait=True)
        self._open = 0

    async def hit(
        self, bucket: str, per_minute: int, per_day: int, now_ms: int | None = None
    ) -> Decision:
        loop = asyncio.get_running_loop()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._tick = loop.time()
            loop.call_soon(self._flush)
        mirror = self.mirror
        carry = _NO_CARRY if mirror is None else mirror.carry(bucket, per_minute)
        future: asyncio.Future[tuple[int, int, int, int]] = loop.create_future()
        self._new.append(_Call(bucket, per_minute, per_day, "" if now_ms is None else now_ms,
                               carry, self._tick, future))  # fmt: skip
        limited_by, remaining, reset_ms, retry_ms = await future
        return decision_from(limited_by, remaining, reset_ms, retry_ms, per_minute, per_day)

    def _flush(self) -> None:
        self._flush_scheduled = False
        calls, self._new = self._new, []
        loop = asyncio.get_running_loop()
        deadline = self._tick + self.timeout
        loop.call_at(deadline, self._expire, calls, deadline, 0.0)
        self._waiting += calls
        self._dispatch()

    def _expire(self, calls: list[_Call], deadline: float, extended: float) -> None:
        """The budget of a tick's calls is spent: those unanswered learn it now (their batch,
        if sent, goes on being read). Unless this process was not running at the deadline
        (this timer late by STARVED or more): then a reply may be waiting unread, and the
        calls get as long again as the process lost, up to one budget more in all."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        lost = now - deadline
        if lost >= STARVED and extended < self.timeout:
            if any(not call.future.done() for call in calls):
                grace = max(STARVED, min(lost, self.timeout - extended))
                loop.call_at(now + grace, self._expire, calls, now + grace, extended + grace)
            return
        for call in calls:
            if not call.future.done():
                call.future.set_exception(
                    TimeoutError(f"Redis did not answer within {self.timeout * 1000:g} ms")
                )

    def _dispatch(self) -> None:
        """Send waiting calls on idle connections; fail them at once if none is open."""
        if not self._waiting:
            return
        if not self._open:
            waiting, self._waiting = self._waiting, []
            self._fail(waiting, NotConnected)
            self._reconnect_soon()
            return
        if not self._idle:
            return
        live = [call for call in self._waiting if not call.future.done()]
        if len(live) < len(self._waiting):  # their callers gave up: never sent, debt back
            self._fail([call for call in self._waiting if call.future.done()], None)
        self._waiting = []
        loop = asyncio.get_running_loop()
        while live:
            if not self._idle:
                self._waiting = live
                return
            batch, live = live[:MAX_BATCH], live[MAX_BATCH:]
            task = loop.create_task(self._send(self._idle.pop(), batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, connection: Any, batch: list[_Call]) -> None:
        try:
            async with asyncio.timeout(self.read_limit):
                replies = await self._exchange(connection, batch, self._evalsha_head)
                flushed = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
                if flushed:  # SCRIPT FLUSH: EVAL runs and caches it, one more round trip
                    again = await self._exchange(
                        connection, [batch[i] for i in flushed], self._eval_head
                    )
                    for i, reply in zip(flushed, again, strict=True):
                        replies[i] = reply
        except BaseException as exc:
            # Broken or silent: the replies are lost, and with them whether Redis ran the calls.
            self._open -= 1
            await connection.disconnect(nowait=True)
            self._fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not self.closed:
                log.warning("Redis rate-limit connection dropped (%s); reopening it",
                            _describe(exc))  # fmt: skip
                await self._sweep()
                self._reconnect_soon()
                self._dispatch()
            return
        loop = asyncio.get_running_loop()
        metrics.REDIS_CALL_SECONDS.observe(loop.time() - batch[0].queued)
        self._idle.append(connection)
        mirror = self.mirror
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):  # an error reply, for this call alone
                self._fail([call], reply)
                continue
            limited_by, remaining, reset_ms, retry_ms, tokens, used = reply
            if mirror is not None:
                mirror.record(call.bucket, call.per_minute, call.per_day, float(tokens), used)
            if not call.future.done():  # else its caller gave up (budget spent)
                call.future.set_result((limited_by, remaining, reset_ms, retry_ms))
        self._dispatch()

    async def _exchange(self, connection: Any, calls: list[_Call], head: bytes) -> list[Any]:
        """Send `calls` in one write; one reply (or error reply) per call, in order."""
        await connection.send_packed_command(
            b"".join(self._encode(head, call) for call in calls), check_health=False
        )
        replies: list[Any] = []
        for _ in calls:
            try:
                # No per-read timeout: `read_limit` bounds the whole exchange.
                replies.append(await connection.read_response(timeout=math.inf))
            except ResponseError as exc:
                replies.append(exc)
        return replies

    @staticmethod
    def _encode(head: bytes, call: _Call) -> bytes:
        parts = [head]
        args = (str(call.per_minute), str(call.per_day), str(call.now), str(call.spent),
                call.mirror_tokens, str(call.mirror_used))  # fmt: skip
        for arg in (*bucket_keys(call.bucket), *args):
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    def _fail(self, calls: list[_Call], error: BaseException | type[BaseException] | None) -> None:
        """These calls got no reply: their debt goes back to the mirror (charged again later;
        twice if Redis ran a call whose reply was lost) and their callers learn `error`
        (a class: one instance each), unless they gave up already."""
        mirror = self.mirror
        for call in calls:
            if call.spent and mirror is not None:
                mirror.restore(call.bucket, call.spent)
            if error is None or call.future.done():
                continue
            if isinstance(error, asyncio.CancelledError):
                call.future.cancel()
            elif isinstance(error, type):
                call.future.set_exception(error("no connection to Redis is open"))
            else:
                call.future.set_exception(error)

    async def _sweep(self) -> None:
        """One connection was lost: drop the idle ones closed too (a Redis restart closes them
        all), so they are reopened now rather than each failing a batch later."""
        for connection in list(self._idle):
            try:
                closed = await connection.can_read()  # data or EOF on an idle one: unusable
            except (RedisError, OSError):
                closed = True
            if closed and connection in self._idle:
                self._idle.remove(connection)
                self._open -= 1
                await connection.disconnect(nowait=True)

    def _add(self, connection: Any) -> None:
        self._idle.append(connection)
        self._open += 1
        self._dispatch()

    def _reconnect_soon(self) -> None:
        if self._connector is None and not self.closed and self._open < self.connections:
            self._connector = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            while not self.closed and self._open < self.connections:
                try:
                    connection = await self._connect()
                except (RedisError, OSError, TimeoutError) as exc:
                    log.debug("Redis rate limiter: reconnect failed (%s)", _describe(exc))
                    await asyncio.sleep(self._backoff.next_delay())
                    continue
                self._backoff.reset()
                self._add(connection)
        finally:
            self._connector = None

    async def _connect(self) -> Any:
        """A new connection with the script loaded, within SETUP_TIMEOUT; retries are ours."""
        pool = self.client.connection_pool
        connection = pool.connection_class(
            **{**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
        )
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                await connection.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                await connection.send_command("SCRIPT", "LOAD", TOKEN_BUCKET_LUA)
                await connection.read_response()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        return connection

    def __repr__(self) -> str:
        return (
            f"<RedisLimiter {self._open}/{self.connections} connections open, "
            f"{len(self._idle)} idle, {len(self._waiting) + len(self._new)} waiting, "
            f"budget {self.timeout * 1000:g} ms>"
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
