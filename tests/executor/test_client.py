"""The gateway's client of the handler pool, against a scripted raw upstream: the answer is
capped, and the connection is as strict as the proxy path's (issue 12)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy.errors import UpstreamUnavailable
from proxy.executor.client import ExecutorClient
from proxy.request_context import RequestContext
from proxy.upstream.pool import UpstreamPool
from tests.support.raw_upstream import RawUpstream, response

CALL = {"module_id": "m", "handler_key": "k", "code": "return 1;"}
RID = RequestContext("rid", started=0.0)


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(max_connections=4, keepalive_seconds=5, connect_timeout=1, timeout=5)
    yield pool
    await pool.close()


def _chunked(body: bytes, piece: int = 65536) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%s\r\n" % (len(body[i : i + piece]), body[i : i + piece])
              for i in range(0, len(body), piece)]  # fmt: skip
    return head + b"".join(chunks) + b"0\r\n\r\n"


async def test_call_posts_json_with_length_and_request_id(pool: UpstreamPool) -> None:
    up = await RawUpstream.start([response(b'"ok"')])
    try:
        client = ExecutorClient(pool, up.url + "/prefix", token="secret")
        answer = await client.call(CALL, RID)
        assert (answer.status, answer.body) == (200, b'"ok"')
        (seen,) = up.requests
        assert (seen.method, seen.target) == ("POST", "/prefix/v1/execute")
        assert seen.header("X-Request-ID") == ["rid"]
        assert seen.header("X-Modgate-Executor-Token") == ["secret"]
        assert seen.header("Content-Length") == [str(len(seen.body))]
    finally:
        await up.close()


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_an_answer_past_the_cap_is_502_and_not_buffered(
    pool: UpstreamPool, framing: str
) -> None:
    body = b"x" * (1024 * 1024)
    data = response(body) if framing == "length" else _chunked(body)
    up = await RawUpstream.start([data], [response(b'"small"')])
    try:
        client = ExecutorClient(pool, up.url, max_response_bytes=64 * 1024)
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.call(CALL, RID)
        assert caught.value.message == "Handler response too large"
        await up.wait_ended(0)  # the connection is dropped, not drained
        answer = await client.call(CALL, RID)
        assert answer.body == b'"small"'
    finally:
        await up.close()


async def test_a_glued_second_answer_never_reaches_the_next_call(pool: UpstreamPool) -> None:
    up = await RawUpstream.start([response(b'"one"') + response(b'"evil"')], [response(b'"two"')])
    try:
        client = ExecutorClient(pool, up.url)
        assert (await client.call(CALL, RID)).body == b'"one"'
        await up.wait_ended(0)
        assert (await client.call(CALL, RID)).body == b'"two"'
        assert up.accepted == 2
    finally:
        await up.close()
