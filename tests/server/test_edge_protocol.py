"""The public port's connections (proxy/server/protocol.py) on a real socket: refused heads in
the error shape, HTTP/1.x only, the header, body and keep-alive timeouts, the connection cap.

The gateway is served as a worker serves it (`build_public_server` on a `ServerRunner`, the
settings' `ClientLimits`), and requests are exact bytes on `asyncio.open_connection` sockets.
Timeouts are set to a few tenths of a second, so nothing here sleeps for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import REGISTRY

from proxy.server import lingering
from proxy.server.app import build_public_server, public_pipeline
from proxy.server.protocol import ClientLimits
from proxy.settings import load_settings
from tests.support.edge import RawClient, RawResponse, assert_error, read_response
from tests.support.gateway import gateway_for, manifest
from tests.support.process import ServeProcess, free_port
from tests.support.upstream import UpstreamLog

Serve = Callable[..., Awaitable[int]]

HELLO = b"GET /api/modules/crm/hello HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
ROUTES = [
    {"path": "/hello", "method": "GET", "handler_type": "static", "handler_code": '{"hi": 1}'},
    {"path": "/upload", "method": "POST", "handler_type": "proxy"},
]


@pytest.fixture
async def serve(tmp_path: Path, upstream: tuple[str, UpstreamLog]) -> AsyncIterator[Serve]:
    """`await serve(**settings)`: the port of a gateway served as a worker serves it."""
    base, _ = upstream
    started: list[tuple[Any, web.ServerRunner]] = []

    async def start(**overrides: object) -> int:
        directory = tmp_path / f"gateway{len(started)}"
        directory.mkdir()
        gateway, _ = gateway_for(directory, manifest(base, ROUTES), **overrides)
        await gateway.start()
        limits = ClientLimits.from_settings(gateway.settings)
        server = build_public_server(public_pipeline(gateway), limits)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        started.append((gateway, runner))
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return port

    yield start
    for gateway, runner in started:
        await runner.cleanup()
        await gateway.stop()


def requests_counted(status: int) -> float:
    labels = {"module": "unknown", "route": "unmatched", "method": "OTHER", "status": str(status)}
    return REGISTRY.get_sample_value("modgate_requests_total", labels) or 0.0


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the gateway sends until it closes the connection (fails if it does not)."""
    received = bytearray()
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            received += chunk
    return bytes(received)


async def refused(port: int, data: bytes) -> tuple[bytes, RawResponse]:
    """Send `data`, read until the gateway closes: the raw bytes and the parsed response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await until_closed(reader)
    finally:
        writer.close()
    return raw, await parse(raw)


async def parse(raw: bytes) -> RawResponse:
    stream = asyncio.StreamReader()
    stream.feed_data(raw)
    stream.feed_eof()
    return await read_response(stream)


def assert_quiet(caplog: pytest.LogCaptureFixture, *secrets: bytes) -> list[logging.LogRecord]:
    """Nothing above INFO, no traceback, none of the request's bytes: the server's records."""
    for record in caplog.records:
        assert record.levelno <= logging.INFO, record.getMessage()
        assert record.exc_info is None, record.getMessage()
        for secret in secrets:
            assert secret.decode("latin-1") not in record.getMessage()
    return [r for r in caplog.records if r.name == "modgate.server"]


# -- refused heads -----------------------------------------------------------------------------

MARK = b"m4rker-7f3a"  # in every attack: must never come back, in the answer or in the logs

ATTACKS = {
    "bad request line": (b"G@T /" + MARK + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "missing Host": (b"GET /api/modules/crm/hello HTTP/1.1\r\nX-M: " + MARK + b"\r\n\r\n",
                     400, "bad_request"),
    "CL and TE": (b"POST /api/modules/crm/upload HTTP/1.1\r\nHost: x\r\nX-M: " + MARK
                  + b"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                  400, "bad_request"),
    "duplicate CL": (b"POST /api/modules/crm/upload HTTP/1.1\r\nHost: x\r\nX-M: " + MARK
                     + b"\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                     400, "bad_request"),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + MARK, 505,
                       "http_version_not_supported"),
    "HTTP/2.0 request": (b"GET /api/modules/crm/hello?" + MARK + b" HTTP/2.0\r\nHost: x\r\n\r\n",
                         505, "http_version_not_supported"),
    "HTTP/1.2 request": (b"GET /" + MARK + b" HTTP/1.2\r\nHost: x\r\n\r\n", 505,
                         "http_version_not_supported"),
    "HTTP/0.9 request": (b"GET /" + MARK + b" HTTP/0.9\r\nHost: x\r\n\r\n", 505,
                         "http_version_not_supported"),
    "9 KB URL": (b"GET /api/modules/crm/" + MARK + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 414, "uri_too_long"),
    "huge header": (b"GET /api/modules/crm/hello HTTP/1.1\r\nHost: x\r\nX-Big: " + MARK
                    + b"b" * 9000 + b"\r\n\r\n", 431, "header_fields_too_large"),
    "too many headers": (b"GET /api/modules/crm/hello HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-%d: %s\r\n" % (i, MARK) for i in range(200)) + b"\r\n",
                         431, "header_fields_too_large"),
    "TLS handshake": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARK + b"\x00" * 64,
                      400, "bad_request"),
}  # fmt: skip


@pytest.mark.parametrize(("data", "status", "code"), ATTACKS.values(), ids=ATTACKS.keys())
async def test_refused_head_is_answered_in_the_error_shape(
    serve: Serve, caplog: pytest.LogCaptureFixture, data: bytes, status: int, code: str
) -> None:
    caplog.set_level(logging.DEBUG)
    port = await serve()
    before = requests_counted(status)
    raw, response = await refused(port, data)

    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:80]
    body = assert_error(response, status, code)
    assert MARK not in raw and b"b'" not in raw and b"\\r\\n" not in raw
    assert len(body["request_id"]) == 32  # fresh, whatever the head carried
    assert response.header("Connection") == ["close"]
    assert requests_counted(status) == before + 1
    (line,) = assert_quiet(caplog, MARK)
    assert line.levelno == logging.INFO
    assert f"-> {status} {code} (request {body['request_id']})" in line.getMessage()


@pytest.mark.parametrize("cors", [False, True])
async def test_refused_head_says_vary_origin_while_cors_is_on(serve: Serve, cors: bool) -> None:
    port = await serve(cors_origins=["https://app.example"] if cors else [])
    _, response = await refused(port, b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n")
    assert response.header("Vary") == (["Origin"] if cors else [])


async def test_refused_head_after_a_good_request_is_answered_in_order(serve: Serve) -> None:
    port = await serve()
    client = await RawClient.connect(port)
    await client.send(HELLO + b"GET /api/modules/crm/hello HTTP/2.0\r\nHost: x\r\n\r\n")
    first = await client.response()
    assert first.status == 200 and first.json() == {"hi": 1}
    raw = first.surplus + await until_closed(client.reader)
    assert raw.startswith(b"HTTP/1.1 505 ")
    assert_error(await parse(raw), 505, "http_version_not_supported")
    await client.close()


async def test_unserved_version_behind_a_declined_upgrade_is_refused(serve: Serve) -> None:
    # aiohttp parses what follows a WebSocket upgrade request only once that request is
    # answered (in finish_response, not data_received): the version rule holds there too.
    port = await serve()
    client = await RawClient.connect(port)
    upgrade = (
        b"GET /api/modules/crm/hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    await client.send(upgrade + b"GET /api/modules/crm/hello HTTP/2.0\r\nHost: x\r\n\r\n")
    first = await client.response()
    assert first.status == 200
    raw = first.surplus + await until_closed(client.reader)
    assert raw.startswith(b"HTTP/1.1 505 "), raw[:100]
    assert_error(await parse(raw), 505, "http_version_not_supported")
    await client.close()


async def test_http_10_and_11_are_served_in_their_own_version(serve: Serve) -> None:
    port = await serve()
    raw, response = await refused(port, b"GET /api/modules/crm/hello HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200 ") and response.json() == {"hi": 1}
    client = await RawClient.connect(port)
    await client.send(HELLO)
    response = await client.response()
    assert response.status == 200 and response.header("Connection") == []
    await client.send(HELLO)  # still open: keep-alive
    assert (await client.response()).status == 200
    await client.close()


# -- header timeout ----------------------------------------------------------------------------


async def test_slow_head_gets_408_and_is_closed(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = await serve(client_header_timeout_seconds=0.3)
    before = (requests_counted(408), sample("modgate_client_timeouts_total", phase="header"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /api/modules/crm/hello HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:  # a byte every 50 ms: slow, never silent
        for _ in range(40):
            await asyncio.sleep(0.05)
            writer.write(b"X")

    dribbling = asyncio.create_task(trickle())
    raw = await until_closed(reader, timeout=3)
    elapsed = time.monotonic() - started
    dribbling.cancel()
    writer.close()

    assert 0.25 <= elapsed < 1.5, elapsed
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert_error(await parse(raw), 408, "request_timeout")
    after = (requests_counted(408), sample("modgate_client_timeouts_total", phase="header"))
    assert after == (before[0] + 1, before[1] + 1)
    (line,) = assert_quiet(caplog)
    assert line.getMessage().startswith(
        "client 127.0.0.1: Request head not received in time -> 408 request_timeout"
    )


async def test_many_half_heads_are_all_closed_in_time(serve: Serve) -> None:
    port = await serve(client_header_timeout_seconds=0.3)
    sockets = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
    for _, writer in sockets:
        writer.write(b"GET /api/modules/crm/hello HTTP/1.1\r\nHost: x\r\nX-Half: ")
    started = time.monotonic()
    answers = await asyncio.gather(*(until_closed(reader, timeout=3) for reader, _ in sockets))
    assert time.monotonic() - started < 2
    assert all(raw.startswith(b"HTTP/1.1 408 ") for raw in answers)
    for _, writer in sockets:
        writer.close()


async def test_connection_that_sends_nothing_is_closed_silently(serve: Serve) -> None:
    port = await serve(client_header_timeout_seconds=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    assert await until_closed(reader, timeout=3) == b""
    assert 0.25 <= time.monotonic() - started < 1.5
    writer.close()


async def test_header_timeout_restarts_with_each_keepalive_request(serve: Serve) -> None:
    port = await serve(client_header_timeout_seconds=0.3, client_keepalive_seconds=5)
    client = await RawClient.connect(port)
    await client.send(HELLO)
    assert (await client.response()).status == 200
    # Idle longer than the header timeout: keep-alive governs an idle connection.
    assert await client.more(wait=0.6) == b""
    # The clock starts at the first byte of the next head, not at the end of the last answer.
    await client.send(HELLO[:10])
    await asyncio.sleep(0.15)
    await client.send(HELLO[10:])
    assert (await client.response()).status == 200
    await client.send(HELLO[:10])
    started = time.monotonic()
    raw = await until_closed(client.reader, timeout=3)
    assert 0.25 <= time.monotonic() - started < 1.5
    assert_error(await parse(raw), 408, "request_timeout")
    await client.close()


# -- body timeout ------------------------------------------------------------------------------


def upload_head(length: int) -> bytes:
    return (
        b"POST /api/modules/crm/upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


async def test_body_silent_past_the_timeout_gets_408_and_is_closed(
    serve: Serve, caplog: pytest.LogCaptureFixture, upstream: tuple[str, UpstreamLog]
) -> None:
    caplog.set_level(logging.DEBUG)
    _, seen = upstream
    port = await serve(client_body_timeout_seconds=0.3)
    before = sample("modgate_client_timeouts_total", phase="body")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upload_head(10) + b"abc")
    started = time.monotonic()
    raw = await until_closed(reader, timeout=3)
    writer.close()

    assert 0.25 <= time.monotonic() - started < 1.5
    assert raw.startswith(b"HTTP/1.1 408 ")
    response = await parse(raw)
    assert_error(response, 408, "request_timeout")
    assert response.header("Connection") == ["close"]
    assert sample("modgate_client_timeouts_total", phase="body") == before + 1
    assert seen.requests == []  # the upstream never got a whole (truncated-as-whole) body
    assert_quiet(caplog)


async def test_slow_but_steady_body_is_not_cut(
    serve: Serve, upstream: tuple[str, UpstreamLog]
) -> None:
    _, seen = upstream
    port = await serve(client_body_timeout_seconds=0.3)
    client = await RawClient.connect(port)
    await client.send(upload_head(8))
    for _ in range(8):  # 1.2 s in all, never silent for 0.3 s
        await asyncio.sleep(0.15)
        await client.send(b"x")
    response = await client.response()
    assert response.status == 200, response.body
    assert seen.requests[-1]["body_bytes"] == 8
    await client.close()


# -- lingering close --------------------------------------------------------------------------


async def keep_sending(writer: asyncio.StreamWriter, until: asyncio.Future[Any]) -> int:
    """Write a byte every turn of the loop until `until` is done: whatever the gateway does
    after deciding to answer, some of these bytes reach it after that decision. Returns how many
    were written (capped well under any header limit)."""
    sent = 0
    while not until.done() and sent < 4000:
        writer.write(b"X")
        sent += 1
        await asyncio.sleep(0)
    return sent


async def test_slow_head_still_sending_reads_its_408_and_a_clean_close(serve: Serve) -> None:
    # The reset seen under load, made certain: bytes keep arriving right after the gateway
    # decided to answer. Closed at once, its socket would hold unread bytes and reset the
    # connection (the client reads ConnectionResetError, not the end of the 408); lingering, it
    # half-closes after the answer and drops what still comes.
    port = await serve(client_header_timeout_seconds=0.3)
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/modules/crm/hello HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        await asyncio.sleep(0.27)  # the gateway's clock started later: its timeout is ahead
        reading = asyncio.ensure_future(until_closed(reader, timeout=3))
        sent = await keep_sending(writer, reading)
        raw = await reading
        writer.close()
        assert sent < 4000  # answered while the bytes were still coming
        assert raw.startswith(b"HTTP/1.1 408 "), raw[:80]
        assert_error(await parse(raw), 408, "request_timeout")


BURST = 200 * 1024  # what the client below sends after its head, before it reads
# Each refused before the burst: the answer comes, and the client is still sending.
LATE_REFUSALS = {
    "bad request line": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, {}),
    "huge header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431,
                    {}),
    # The burst is its body: the 505 is answered with that body unread.
    "HTTP/2.0 request": (b"POST /api/modules/crm/upload HTTP/2.0\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n" % BURST, 505, {}),
    # aiohttp drains a body the answer left unread (its own lingering), then closes: passes
    # without the gateway's lingering too, and must keep passing with it.
    "413 before the body": (upload_head(BURST), 413, {"max_body_bytes": 1024}),
}  # fmt: skip


@pytest.mark.parametrize(("head", "status", "settings"), LATE_REFUSALS.values(),
                         ids=LATE_REFUSALS.keys())  # fmt: skip
async def test_client_that_sends_everything_before_reading_still_gets_the_answer(
    serve: Serve, head: bytes, status: int, settings: dict[str, object]
) -> None:
    # A client that writes its whole request (an upload, say) and only then reads: a gateway
    # closing at once resets the connection under it, and the answer it had received is lost
    # (asyncio's reader raises the reset first). Lingering, the answer and a clean end arrive.
    port = await serve(**settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    for _ in range(BURST // 1024):  # a turn of the loop each: the gateway answers meanwhile
        writer.write(b"x" * 1024)
        await writer.drain()
        await asyncio.sleep(0)
    raw = await until_closed(reader)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:80]
    response = await parse(raw)
    assert_error(response, status)
    assert response.header("Connection") == ["close"]


async def closed_by_the_gateway(open_before: float, timeout: float = 3.0) -> float:
    """Seconds until the gateway's count of open connections is back to `open_before`."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while sample("modgate_client_connections") > open_before:
            await asyncio.sleep(0.01)
    return time.monotonic() - started


LINGERERS = {
    # client after its answer: (what it sends every 10 ms, whether it closes), when it is closed
    "closes": (b"", True, (0.0, 0.2)),
    "silent": (b"", False, (0.25, 0.6)),  # LINGER_IDLE_SECONDS
    "never stops": (b"x", False, (0.9, 1.6)),  # LINGER_SECONDS
    "floods": (b"x" * 16384, False, (0.0, 0.5)),  # LINGER_MAX_BYTES
}  # fmt: skip


@pytest.mark.parametrize(("chunk", "closes", "bounds"), LINGERERS.values(), ids=LINGERERS.keys())
async def test_lingering_is_bounded(
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
    chunk: bytes,
    closes: bool,
    bounds: tuple[float, float],
) -> None:
    monkeypatch.setattr(lingering, "LINGER_SECONDS", 1.0)
    monkeypatch.setattr(lingering, "LINGER_IDLE_SECONDS", 0.3)
    monkeypatch.setattr(lingering, "LINGER_MAX_BYTES", 64 * 1024)
    port = await serve()
    open_before = sample("modgate_client_connections")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = await until_closed(reader)  # the answer, then the gateway's half-close
    assert_error(await parse(raw), 400)
    assert sample("modgate_client_connections") == open_before + 1  # still under the cap
    if closes:
        writer.close()

    async def send() -> None:
        while chunk:
            writer.write(chunk)
            await asyncio.sleep(0.01)

    sending = asyncio.create_task(send())
    elapsed = await closed_by_the_gateway(open_before)
    sending.cancel()
    writer.close()
    low, high = bounds
    assert low <= elapsed < high, elapsed


# -- keep-alive --------------------------------------------------------------------------------


async def test_idle_keepalive_connection_is_closed(serve: Serve) -> None:
    port = await serve(client_keepalive_seconds=0.3)
    client = await RawClient.connect(port)
    await client.send(HELLO)
    assert (await client.response()).status == 200
    started = time.monotonic()
    assert await until_closed(client.reader, timeout=3) == b""
    assert 0.25 <= time.monotonic() - started < 1.5
    await client.close()


# -- connection cap ----------------------------------------------------------------------------


async def test_connection_past_the_cap_gets_503_and_is_closed(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = await serve(max_client_connections=2)
    open_before = sample("modgate_client_connections")
    refused_before = sample("modgate_client_connections_refused_total")
    counted_before = requests_counted(503)
    held = [await RawClient.connect(port) for _ in range(2)]
    for client in held:  # served, and kept open
        await client.send(HELLO)
        assert (await client.response()).status == 200
    assert sample("modgate_client_connections") == open_before + 2

    raw, response = await refused(port, HELLO)
    assert raw.startswith(b"HTTP/1.1 503 ")
    assert_error(response, 503, "too_many_connections")
    assert response.header("Connection") == ["close"]
    assert sample("modgate_client_connections_refused_total") == refused_before + 1
    assert requests_counted(503) == counted_before + 1
    assert_quiet(caplog)

    await held[0].close()
    await asyncio.sleep(0.1)  # the gateway sees the close
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HELLO)
    assert (await read_response(reader)).status == 200
    writer.close()
    await held[1].close()


# -- settings ----------------------------------------------------------------------------------


def test_limits_default_to_the_settings_defaults(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("{}\n")
    settings = load_settings(str(config), environ={})
    assert ClientLimits.from_settings(settings) == ClientLimits()
    custom = load_settings(
        str(config),
        environ={
            "MODGATE_CLIENT_HEADER_TIMEOUT_SECONDS": "2.5",
            "MODGATE_MAX_CLIENT_CONNECTIONS": "7",
        },
    )
    limits = ClientLimits.from_settings(custom)
    assert (limits.header_timeout, limits.max_connections) == (2.5, 7)


# -- the real worker ---------------------------------------------------------------------------


async def test_modgate_serve_answers_refused_heads_and_applies_the_settings(
    tmp_path: Path,
) -> None:
    """`modgate serve` (uvloop, limits from MODGATE_* variables): the same answers, and its
    output has no traceback and nothing of the requests."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump(manifest(None, ROUTES[:1])))
    proc = ServeProcess(
        "--routes-file",
        str(routes),
        env={"MODGATE_CLIENT_HEADER_TIMEOUT_SECONDS": "0.3", "MODGATE_ACCESS_LOG": "false"},
        cwd=str(tmp_path),
    )
    await proc.start()
    try:
        for data, status in [
            (ATTACKS["bad request line"][0], 400),
            (ATTACKS["HTTP/2 preface"][0], 505),
            (ATTACKS["9 KB URL"][0], 414),
        ]:
            raw, response = await refused(proc.port, data)
            assert raw.startswith(b"HTTP/1.1 %d " % status)
            assert_error(response, status)
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(HELLO[:20])
        raw = await until_closed(reader, timeout=3)
        writer.close()
        assert_error(await parse(raw), 408, "request_timeout")
    finally:
        await proc.stop()
    output = await proc.output()
    assert "Traceback" not in output and MARK.decode() not in output
    assert "ERROR" not in output and "WARNING" not in output
    assert output.count("-> 400 bad_request") == 1 and "-> 408 request_timeout" in output
