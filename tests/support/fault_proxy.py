"""A TCP proxy that injects faults between a client and a server (asyncpg's test approach).

Modes: `pass` relays bytes; `blackhole` keeps connections open but relays nothing and accepts
new connections without ever connecting them (a partition without FIN or RST); `refuse`
closes existing connections and refuses new ones; `mute` relays what clients send but none of
the answers (the server acts on a request whose reply is lost). `switch_on(marker, mode)` changes
the mode as soon as a client sends bytes containing `marker` (e.g. b"COMMIT"): in `blackhole`
those bytes are held back, in `mute` they reach the server.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._switch: tuple[bytes, str] | None = None
        self._closed = False

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url_for(self, dsn: str) -> str:
        """`dsn` with its host:port replaced by this proxy's."""
        scheme, rest = dsn.split("://", 1)
        userinfo, _, hostpart = rest.rpartition("@")
        _, _, path = hostpart.partition("/")
        auth = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{path}"

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "blackhole", "refuse", "mute")
        self._switch = None
        self.mode = mode
        if mode == "refuse":
            self.drop_all()

    def switch_on(self, marker: bytes, mode: str) -> None:
        """Change to `mode` when a client next sends bytes containing `marker`."""
        assert mode in ("blackhole", "mute")
        self._switch = (marker, mode)

    def drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        self._writers.add(writer)
        while self.mode == "blackhole" and not self._closed:
            await asyncio.sleep(0.05)
        if self.mode == "refuse" or self._closed:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._closed:  # closed while this connection was being opened: never leak it
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for src, dst, upstream in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pipe(src, dst, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if upstream and self._switch is not None and self._switch[0] in data:
                    self.mode, self._switch = self._switch[1], None  # before these bytes go
                if self.mode == "mute" and not upstream:
                    continue  # the answer is lost
                while self.mode == "blackhole":
                    await asyncio.sleep(0.05)
                if self.mode == "refuse":
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)

    async def close(self) -> None:
        self._closed = True
        self.drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.drop_all()  # whatever was opened while this closed
