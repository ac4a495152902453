"""The gateway's side of the handler pool: one POST per function-route call, pooled."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiohttp import web

from proxy.errors import UpstreamTimeout, UpstreamUnavailable
from proxy.observability import metrics

TOKEN_HEADER = "X-Modgate-Executor-Token"

# Headers a handler never sees: credentials and cookies belong to the gateway's checks.
HIDDEN_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})


class ExecutorClient:
    __slots__ = ("_ok", "session", "timeout", "token", "url")

    def __init__(
        self, session: aiohttp.ClientSession, url: str, *, timeout: float, token: str | None = None
    ) -> None:
        self.session = session
        self.token = token
        self.url = url.rstrip("/") + "/v1/execute"
        # The pool stops a handler at its own limit and answers 504; this margin covers the
        # trip, so a gateway timeout means the pool itself is stuck.
        self.timeout = aiohttp.ClientTimeout(total=timeout + 2.0)
        self._ok = metrics.HANDLER_POOL_REQUESTS.labels(result="ok")

    async def call(self, payload: dict[str, Any], extra: dict[str, str]) -> web.Response:
        headers = {"Content-Type": "application/json", "X-Request-ID": extra["X-Request-ID"]}
        sent = dict(headers)
        if self.token is not None:
            sent[TOKEN_HEADER] = self.token
        try:
            async with self.session.post(
                self.url, data=orjson.dumps(payload), headers=sent, timeout=self.timeout
            ) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            metrics.HANDLER_POOL_REQUESTS.labels(result="timeout").inc()
            raise UpstreamTimeout("The handler pool did not answer in time") from None
        except (aiohttp.ClientError, OSError):
            metrics.HANDLER_POOL_REQUESTS.labels(result="unavailable").inc()
            raise UpstreamUnavailable("The handler pool is unavailable") from None
        self._ok.inc()
        return web.Response(status=status, body=body, headers={**extra, **headers})


def visible_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() not in HIDDEN_HEADERS}
