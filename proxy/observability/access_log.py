"""The access log: one JSON object per request on stdout, for log collectors.

Fields: ts, request_id, module, route (the template), method, path (without the query:
query strings carry tokens), status, duration_ms, caller (an API key's prefix, a JWT's user,
or "anonymous"), client (address). Never a key, token, header or body.

Lines are buffered and written when the buffer passes BUFFER_BYTES or every FLUSH_SECONDS, so
a request costs a dict and a serialisation, not a system call. stdout is expected to be drained
by its reader (a container runtime always does); a reader that stops reading would eventually
stall the writes, so keep the access log off where nothing reads stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import BinaryIO

import orjson

from proxy.tasks import cancel_and_wait

BUFFER_BYTES = 64 * 1024
FLUSH_SECONDS = 0.5


class AccessLog:
    __slots__ = ("_buffer", "_out", "_size", "_task")

    def __init__(self, out: BinaryIO | None = None) -> None:
        self._out = out if out is not None else sys.stdout.buffer
        self._buffer: list[bytes] = []
        self._size = 0
        self._task: asyncio.Task[None] | None = None

    def write(self, entry: dict[str, object]) -> None:
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        with contextlib.suppress(OSError, ValueError):  # stdout closed: nothing to do about it
            self._out.write(data)
            self._out.flush()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="modgate-access-log")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()
