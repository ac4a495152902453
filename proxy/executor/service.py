"""`modgate executor`, one worker process: POST /v1/execute runs a handler and answers.

The gateway has already authenticated and authorized the caller; it sends the handler's code,
its cache key, and the context (module, site, user, key, scopes, params, query, body, safe
headers). The executor never trusts the handler: it runs in an isolate per (module, site), its
`ctx.db` reaches only that module's tables and that site's rows (the SQL is built here, not in
JS), and its failures become errors of proxy/errors.py, answered in the error shape:

    timeout -> 504 handler_timeout      memory -> 500 handler_memory_exceeded
    syntax  -> 500 handler_invalid      thrown -> 404 not_found (supabase PGRST116, no rows),
    bad_result / crashed -> 500         400 bad_request (data errors 22xxx/23xxx), 500 otherwise
    worker full -> 503 executor_busy       module at its cap -> 503 module_busy

Back-pressure and fairness (admission.py): at most `executor_concurrency` calls run per worker,
at most `executor_module_concurrency` of them for one module, and `executor_queue_size` wait;
past that a call is refused at once with 503, so an overloaded pool sheds load instead of
building an unbounded queue, and a module whose handlers loop forever holds only its own
share. A call's deadline (`executor_timeout_seconds`) runs from its arrival: waiting for a slot
counts, and a call still waiting at its deadline is refused with 503 (it never ran).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from proxy.errors import (
    BadRequest,
    DatabaseRequired,
    ExecutorTokenRefused,
    GatewayError,
    HandlerFailed,
    HandlerInvalid,
    HandlerMemoryExceeded,
    HandlerTimeout,
    ModuleBusy,
    PoolBusy,
    RowNotFound,
)
from proxy.executor.admission import Admission
from proxy.executor.client import TOKEN_HEADER
from proxy.executor.data_access import execute_query
from proxy.executor.db_client_js import DB_CLIENT_JS
from proxy.executor.entities import Answer, run_entity_call
from proxy.executor.sandbox import HandlerError, Sandbox
from proxy.http.metrics_endpoint import metrics_text
from proxy.http.request_id import request_id_for
from proxy.http.responses import error_response
from proxy.http.server_header import hide_server_version
from proxy.observability import metrics
from proxy.settings import Settings

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("modgate.executor")

_REQUIRED = ("module_id", "handler_key", "code")
_REQUIRED_ENTITY = ("module_id", "entity", "operation")  # kind "entity" (executor/entities/)
_CALLS = metrics.BoundLabels(metrics.EXECUTOR_CALLS)  # by outcome; every handler call counts
_DB_UNAVAILABLE = orjson.dumps(
    {"data": None, "error": {"message": "database unavailable", "code": "db_unavailable"}}
).decode()


class Executor:
    """One worker's pool of isolates, database connections and call slots."""

    def __init__(self, settings: Settings, *, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.sandbox = sandbox or Sandbox(
            timeout=settings.executor_timeout_seconds,
            memory_limit=settings.executor_memory_mb << 20,
            max_isolates=settings.executor_max_isolates,
            db_client_js=DB_CLIENT_JS,
        )
        self.admission = Admission(
            concurrency=settings.executor_concurrency,
            module_concurrency=settings.executor_module_concurrency,
            queue_size=settings.executor_queue_size,
        )
        # Opened by `start` when database_url is set; None until then, and for good without
        # one: handlers' ctx.db calls then answer db_unavailable (`_db_call`).
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        if self.settings.database_url:
            import asyncpg

            # min_size=0: the executor starts (and reports ready) while Postgres is away;
            # handlers' ctx.db calls then answer db_unavailable until it is back.
            self.pool = await asyncpg.create_pool(
                self.settings.database_url,
                min_size=0,
                max_size=self.settings.database_pool_size,
                command_timeout=self.settings.database_timeout,
            )
        else:
            log.warning(
                "database_url is unset: handlers run, but every ctx.db call answers "
                "db_unavailable (a 500 for the client); set database_url "
                "(MODGATE_DATABASE_URL) to the database holding the modules' tables"
            )

    async def stop(self) -> None:
        await self.sandbox.close()
        if self.pool is not None:
            await self.pool.close()

    async def execute(self, payload: dict[str, Any]) -> Any:
        """The handler's result for one call; a GatewayError (ExecutorError, BadRequest) when
        the call is refused or the handler fails."""
        started = time.perf_counter()
        module_id = str(payload["module_id"])
        deadline = asyncio.get_running_loop().time() + self.settings.executor_timeout_seconds
        try:
            slots = await self.admission.acquire(module_id, deadline)
        except PoolBusy as busy:
            outcome = "module_busy" if isinstance(busy, ModuleBusy) else "rejected"
            _CALLS(outcome).inc()
            raise
        metrics.EXECUTOR_IN_PROGRESS.inc()
        try:
            if payload.get("kind") == "entity":
                return await self._run_entity(payload, deadline)
            return await self._run(module_id, payload, deadline)
        finally:
            self.admission.release(slots)
            metrics.EXECUTOR_IN_PROGRESS.dec()
            metrics.EXECUTOR_DURATION.observe(time.perf_counter() - started)

    async def _run(self, module_id: str, payload: dict[str, Any], deadline: float) -> Any:
        site_id = payload.get("site_id")
        ctx = {
            "params": payload.get("params") or {},
            "query": payload.get("query") or {},
            "body": payload.get("body"),
            "headers": payload.get("headers") or {},
            "user": {"id": payload["user_id"]} if payload.get("user_id") else None,
            "site": {"id": site_id},
            # An API consumer's call (dk_ key): {id}; null for users, module keys, anonymous.
            "consumer": {"id": payload["consumer_id"]} if payload.get("consumer_id") else None,
        }

        async def db(spec_json: str) -> str:
            return await self._db_call(module_id, site_id, spec_json)

        try:
            result = await self.sandbox.run(
                isolate_key=f"{module_id}:{site_id}",
                handler_key=str(payload["handler_key"]),
                code=str(payload["code"]),
                ctx=ctx,
                db=db,
                deadline=deadline,
            )
        except HandlerError as exc:
            _CALLS(exc.kind).inc()
            raise _failure(exc, payload) from exc
        _CALLS("ok").inc()
        return result

    async def _run_entity(self, payload: dict[str, Any], deadline: float) -> Answer:
        """A generated REST route's call: one statement through the data layer, no isolate."""
        if self.pool is None:
            _CALLS("invalid").inc()
            raise DatabaseRequired(
                "Entity routes need the handler pool's database (database_url), which is unset"
            )
        try:
            async with asyncio.timeout_at(deadline):
                answer = await run_entity_call(
                    self.pool, payload, timeout=self.settings.database_timeout
                )
        except TimeoutError:
            _CALLS("timeout").inc()
            raise HandlerTimeout() from None
        except GatewayError as err:
            _CALLS("invalid" if err.status < 500 else "entity_failed").inc()
            raise
        _CALLS("ok").inc()
        return answer

    async def _db_call(self, module_id: str, site_id: str | None, spec_json: str) -> str:
        if self.pool is None:
            return _DB_UNAVAILABLE
        try:
            spec = orjson.loads(spec_json)
            async with self.pool.acquire(timeout=self.settings.database_timeout) as conn:
                result = await execute_query(conn, module_id=module_id, site_id=site_id, spec=spec)
        except (OSError, TimeoutError) as exc:
            log.warning("handler database call failed: %s", exc)
            return _DB_UNAVAILABLE
        except Exception as exc:  # asyncpg errors that escaped the mapping; never into JS raw
            log.warning("handler database call failed: %s", type(exc).__name__)
            return _DB_UNAVAILABLE
        return orjson.dumps(result, default=str).decode()


def _failure(exc: HandlerError, payload: dict[str, Any]) -> GatewayError:
    """What a failed handler call answers; what the module's authors must fix is logged too."""
    where = f"handler {payload.get('handler_key')} of module {payload.get('module_id')}"
    if exc.kind == "timeout":
        return HandlerTimeout()
    if exc.kind == "memory":
        log.warning("%s exceeded its memory limit", where)
        return HandlerMemoryExceeded()
    if exc.kind == "syntax":
        log.warning("%s does not compile: %s", where, exc.message)
        return HandlerInvalid(f"The handler code does not compile: {exc.message}")
    if exc.kind == "thrown":
        code = exc.code or ""
        if code == "PGRST116":
            return RowNotFound()
        if code.startswith(("22", "23")) or code in ("invalid_query", "invalid_identifier"):
            return BadRequest(exc.message)  # a data error: the caller's values
        return HandlerFailed(exc.message)
    log.error("%s failed (%s): %s", where, exc.kind, exc.message)
    return HandlerFailed()


def _call_of(body: bytes) -> dict[str, Any]:
    """An execute request's payload: a JSON object with at least the required fields."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    required = _REQUIRED_ENTITY if _is_entity(payload) else _REQUIRED
    if not isinstance(payload, dict) or any(k not in payload for k in required):
        _CALLS("invalid").inc()
        raise BadRequest("Malformed execute request")
    return payload


def _is_entity(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("kind") == "entity"


EXECUTOR = web.AppKey("executor", Executor)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def build_executor_app(executor: Executor) -> web.Application:
    hide_server_version()
    app = web.Application(client_max_size=64 << 20)
    app[EXECUTOR] = executor

    async def lifecycle(_app: web.Application) -> Any:
        settings = executor.settings
        host = settings.listen_addresses.executor.host
        if not settings.executor_token and host not in _LOOPBACK:
            log.warning(
                "executor_token is unset and the executor listens on %s: anything that can "
                "reach this port can run handlers for any module and site; set executor_token "
                "or restrict the network (the Helm chart's NetworkPolicy does)",
                settings.executor_listen,
            )
        await executor.start()
        yield
        await executor.stop()

    token = executor.settings.executor_token
    expected = token.encode() if token else None

    async def execute(request: web.Request) -> web.Response:
        request_id = request_id_for(request.headers.get("X-Request-ID"))
        try:
            if expected is not None:
                given = request.headers.get(TOKEN_HEADER, "").encode()
                if not hmac.compare_digest(given, expected):
                    _CALLS("unauthorized").inc()
                    log.warning(
                        "refused a call from %s without the right executor_token (%s header)",
                        request.remote,
                        TOKEN_HEADER,
                    )
                    raise ExecutorTokenRefused()
            result = await executor.execute(_call_of(await request.read()))
        except GatewayError as err:
            return error_response(err, request_id)
        if isinstance(result, Answer):  # an entity call: Postgres rendered the JSON
            return web.Response(
                status=result.status,
                body=result.body,
                headers={"Content-Type": "application/json", "X-Request-ID": request_id},
            )
        return web.Response(
            body=orjson.dumps(result, default=str),
            headers={"Content-Type": "application/json", "X-Request-ID": request_id},
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/execute", execute)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    return app
