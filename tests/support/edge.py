"""Raw HTTP/1.1 at the gateway's edge: the real public server on a real socket, and a client
that sends exact bytes and reads one response.

Strategy: nothing between the test and the gateway may normalise a request (aiohttp's and
most clients' URL handling collapse dot segments and re-encode paths), so requests are written
as bytes on an `asyncio.open_connection` socket and the answer is parsed with httptools. The
gateway is served the way a worker serves it (`build_public_server` on a `ServerRunner`), so
parser-level errors meet the same server as in production.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools
from aiohttp import web

from proxy.server.app import build_public_server, public_pipeline
from proxy.server.gateway import Gateway
from proxy.server.protocol import ClientLimits
from tests.support.gateway import MODULE_ID, gateway_for, manifest
from tests.support.process import free_port
from tests.support.raw_upstream import RawUpstream, SeenRequest

DEFAULT_TIMEOUT = 5.0
ERROR_KEYS = {"error", "code", "request_id"}
# What the fuzz tests ran and saw (tests/edge/test_fuzz.py), printed at the end of the run.
FUZZ_STATS: Counter[str] = Counter()
IDENTITY_HEADERS = ("X-User-Id", "X-Scopes", "X-Site-Id", "X-Module-Id", "X-Api-Key-Id")


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    # Bytes that came after this response in the same reads (a glued second message, say).
    surplus: bytes = b""

    def header(self, name: str) -> list[str]:
        """Every value sent for `name` (case-insensitive), in order."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    def json(self) -> Any:
        return json.loads(self.body)


class ResponseIncomplete(AssertionError):
    """The connection ended (or the timeout passed) before one whole response arrived."""


class _Collector:
    """httptools callbacks for one message; the bytes after it are kept as surplus."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.headers_done = False
        self.complete = False
        self.surplus = bytearray()

    def feed(self, data: bytes) -> None:
        # Byte by byte, so that where the response ends is known exactly (responses here are
        # small): whatever follows it, in this read or a later one, is surplus.
        for index in range(len(data)):
            if self.complete:
                self.surplus += data[index:]
                return
            self.parser.feed_data(data[index : index + 1])

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


async def read_response(
    reader: asyncio.StreamReader, timeout: float = DEFAULT_TIMEOUT
) -> RawResponse:
    """Read and parse exactly one response (a body read to EOF counts when it has no length)."""
    collector = _Collector()
    received = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while not collector.complete:
                data = await reader.read(65536)
                if not data:
                    break
                received += data
                try:
                    collector.feed(data)
                except httptools.HttpParserError as exc:
                    raise ResponseIncomplete(f"unparsable response {bytes(received)!r}") from exc
    except TimeoutError:
        raise ResponseIncomplete(f"no whole response in {timeout}s: {bytes(received)!r}") from None
    framed = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in collector.headers)
    if not collector.complete and not (collector.headers_done and not framed):
        raise ResponseIncomplete(f"connection closed mid-response: {bytes(received)!r}")
    return RawResponse(
        collector.status, collector.headers, bytes(collector.body), bytes(collector.surplus)
    )


class RawClient:
    """One client connection: send bytes, read responses, in the order the test says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = DEFAULT_TIMEOUT) -> RawResponse:
        return await read_response(self.reader, timeout)

    async def more(self, wait: float = 0.2) -> bytes:
        """Whatever arrives within `wait` seconds (b"" when nothing, or on EOF)."""
        try:
            async with asyncio.timeout(wait):
                return await self.reader.read(65536)
        except TimeoutError:
            return b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass  # the gateway may have reset a connection it refused


async def exchange(port: int, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> RawResponse:
    """Send `data` on a new connection and return the one response it gets."""
    client = await RawClient.connect(port)
    try:
        await client.send(data)
        return await client.response(timeout)
    finally:
        await client.close()


def raw_request(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    *,
    host: str = "gateway.test",
) -> bytes:
    """A request as bytes, exactly as given (a body gets a Content-Length unless the headers
    already frame it)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    pairs = list(headers)
    lines += [f"{name}: {value}" for name, value in pairs]
    framed = any(n.lower() in ("content-length", "transfer-encoding") for n, _ in pairs)
    if body is not None and not framed:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b"")


def chunked(body: bytes, size: int = 5) -> bytes:
    """`body` in the chunked coding, `size` bytes a chunk."""
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def assert_error(
    response: RawResponse, status: int | tuple[int, ...], code: str | None = None
) -> dict[str, Any]:
    """The response is the gateway's JSON error shape with `status` (one of them, if several)
    and `code`, if given."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status in statuses, (response.status, response.body[:300])
    assert response.header("Content-Type")[0].startswith("application/json"), response.headers
    data = response.json()
    assert set(data) == ERROR_KEYS, data
    assert response.header("X-Request-ID") == [data["request_id"]]
    if code is not None:
        assert data["code"] == code, data
    return data


def requests_begun(data: bytes) -> int:
    """How many requests begin in `data`, the bytes one upstream connection received (one
    more than it parsed whole means a request was smuggled in, or cut short)."""

    class Count:
        begun = 0

        def on_message_begin(self) -> None:
            self.begun += 1

    counter = Count()
    try:
        httptools.HttpRequestParser(counter).feed_data(data)
    except httptools.HttpParserError:
        counter.begun += 1  # bytes that are not a request where a request should start
    return counter.begun


def assert_gateway_head(
    seen: SeenRequest, upstream: RawUpstream, *, anonymous: bool = True
) -> None:
    """`seen` has the head the gateway writes: the upstream's Host, one framing of its own that
    matches the body, its own request id and identity headers (none of a caller's when
    `anonymous`), and nothing that a client says about its address."""
    assert seen.header("Host") == [f"127.0.0.1:{upstream.port}"], seen.headers
    lengths, codings = seen.header("Content-Length"), seen.header("Transfer-Encoding")
    assert len(lengths) + len(codings) <= 1 and codings in ([], ["chunked"]), seen.headers
    assert lengths in ([], [str(len(seen.body))]), seen.headers
    assert len(seen.header("X-Request-ID")) == 1 and seen.header("X-Module-Id") == [MODULE_ID]
    assert len(seen.header("X-Forwarded-For")) == 1, seen.headers
    if anonymous:
        for name in ("X-User-Id", "X-Site-Id", "X-Api-Key-Id"):
            assert seen.header(name) == [], seen.headers


@dataclass
class RunningGateway:
    gateway: Gateway
    runner: web.ServerRunner
    port: int

    async def exchange(self, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> RawResponse:
        return await exchange(self.port, data, timeout)

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.gateway.stop()


async def start_gateway(
    directory: Path, data: Mapping[str, Any], **overrides: object
) -> RunningGateway:
    """The gateway over manifest `data`, served on a free port as a worker serves it."""
    directory.mkdir(parents=True, exist_ok=True)
    gateway, _ = gateway_for(directory, data, **overrides)
    await gateway.start()
    runner = web.ServerRunner(
        build_public_server(public_pipeline(gateway), ClientLimits.from_settings(gateway.settings)),
        handle_signals=False,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return RunningGateway(gateway, runner, port)


# -- the routes every edge test runs behind ---------------------------------------------------

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ADMIN_SCOPE = "admin:read"
SITE_ID = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"
# An embedded-mode key with the admin scope (the manifest holds its SHA-256 only).
ADMIN_KEY = "dmc_live_" + "ab" * 32


def edge_manifest(upstream: str, **route_fields: Any) -> dict[str, Any]:
    """Module `crm` with upstream `upstream` + "/base": `/public/*` anonymous, `/admin/*` needing
    ADMIN_SCOPE, `/raw/*` keeping encoded slashes; handler_url routes `/pub/:name` ->
    /files/:name, `/files/*` -> /store/* and `/kfiles/*` -> /kstore/* (encoded slashes kept).
    `route_fields` are added to every route (`encoded_slashes`, say)."""
    admin = {"requires_auth": True, "required_scopes": [ADMIN_SCOPE]}
    keep = {"encoded_slashes": "keep"}
    routes: list[dict[str, Any]] = []
    for method in METHODS:
        routes.append({"path": "/public/*", "method": method, "handler_type": "proxy"})
        routes.append({"path": "/admin/*", "method": method, "handler_type": "proxy", **admin})
    routes += [
        {"path": "/raw/*", "method": "GET", "handler_type": "proxy", **keep},
        {"path": "/pub/:name", "method": "GET", "handler_url": f"{upstream}/files/:name"},
        {"path": "/files/*", "method": "GET", "handler_url": f"{upstream}/store/*"},
        {"path": "/kfiles/*", "method": "GET", "handler_url": f"{upstream}/kstore/*", **keep},
    ]
    for route in routes:
        route.setdefault("handler_type", "proxy")
        route.update(route_fields)
    data = manifest(f"{upstream}/base", routes)
    data["api_keys"] = [
        {
            "name": "edge admin",
            "module_id": MODULE_ID,
            "site_id": SITE_ID,
            "key_prefix": ADMIN_KEY[:12],
            "key_hash": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
            "scopes": [ADMIN_SCOPE],
        }
    ]
    return data


# The edge fixtures' factories (tests/edge/conftest.py), for annotations.
StartUpstream = Callable[..., Awaitable[RawUpstream]]
StartGateway = Callable[..., Awaitable[RunningGateway]]
