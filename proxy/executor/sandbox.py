"""Run handler code in V8 isolates (mini-racer): one isolate per (module, site), reused.

Strategy:
- Isolation between tenants is structural: an isolate serves one `isolate_key`
  ("<module_id>:<site_id>"), so nothing a handler leaves in globals or in patched built-ins
  reaches another module's or site's call. Within one isolate, calls share globals by design
  (same module, same site, same data scope); patching built-ins there can disturb sibling
  calls of the same tenant but gains nothing they could not do themselves, so built-ins are
  not frozen (JS semantics stay intact). A fresh isolate has no require/process/fetch or host
  globals, so `eval`, `Function` and `globalThis` reach nothing sensitive.
- No host function exists in JS. The sandbox's API (`start`, `step`) is a script-scope
  `const` with a random 128-bit name: not a property of `globalThis`, never named in code a
  handler can read, and strict-mode, so stack-trace APIs do not hand out its functions.
  A handler's `ctx.db` gets a fresh closure bound to its own call record; a db request only
  queues a spec there. Python drives each call by `step(token)` (tokens random, known only
  to Python) and runs the queued specs with that call's `db`, so a handler can reach no
  other call's `db`, forged ids included. Tables are null-prototype objects and results are
  concatenated strings, so patched prototypes never see them.
- Every entry into JS is `eval_cancelable` of a string under the call's deadline: no
  synchronous mini-racer call is made while an isolate may be busy (one would block the event
  loop, and with it every timer that could end the busy call).
- mini-racer runs promise continuations outside its cancelable tasks, so code looping after an
  `await` cannot be terminated, only the isolate closed. Hence a timeout, a memory-limit hit
  or an engine failure discards the isolate; it is closed once its last in-flight call ends
  (closing earlier would free memory that pending callbacks still read).
- A handler can leave code behind that runs after its call has ended (a `setTimeout` callback,
  any other task it queued): nothing then waits on that isolate, so no deadline stops it. A
  watchdog looks at every isolate with no call in flight each `watch_interval` and closes any
  that does not answer a trivial eval within that interval: code left looping stops within
  two intervals (default 1 s each), and the isolate is replaced on its next call. A look costs
  about 0.1 ms of CPU per isolate (64 idle isolates: about 1% of a core).
- Compiled handlers live in the isolate (`new AsyncFunction('ctx', code)`: the body cannot
  break out of its function), mirrored by an LRU in Python that decides when code is sent.
  Requests a handler never awaited are dropped when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from py_mini_racer import JSEvalException, JSOOMException, JSParseException, MiniRacer

log = logging.getLogger("modgate.executor")

DbCall = Callable[[str], Awaitable[str]]

DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_MEMORY_LIMIT: Final = 64 << 20
DEFAULT_MAX_ISOLATES: Final = 32
DEFAULT_MAX_HANDLERS: Final = 1000
MESSAGE_LIMIT: Final = 500
_POLL_MAX: Final = 0.05  # seconds between looks at a call waiting on neither db nor result
DEFAULT_WATCH_INTERVAL: Final = 1.0  # seconds between looks at isolates with no call in flight
_MEMORY: Final = "the handler exceeded its memory limit"

# Bootstrap, evaluated once per isolate.
#   __API__: a random identifier; __DB_CLIENT__: JS defining __modgateMakeDb(call) (or empty)
#   defines: `const __API__` in script scope (no global property), holding
#     start(token, key, code|null, drop|null, ctxJson)
#       -> '' | '{"s":"syntax","m"}' | '{"s":"missing"}'
#     step(token, [[id, 1|0, text]...])
#       -> '{"s":"db","q":[[id,spec]...]}' | '{"s":"wait"}' | '{"s":"ok","v"}'
#        | '{"s":"thrown","m","c"}' | '{"s":"bad_result","m"}' | '{"s":"gone"}'
_BOOTSTRAP: Final = """
const __API__ = (function (makeDb) {
  'use strict';
  const AsyncFunction = (async function () {}).constructor, PromiseCtor = Promise;
  const then = Promise.prototype.then, apply = Reflect.apply, create = Object.create;
  const define = Object.defineProperty, parse = JSON.parse, stringify = JSON.stringify;
  const ErrorCtor = Error, toStr = String, wellFormed = String.prototype.toWellFormed;
  const handlers = create(null), calls = create(null);
  const text = (v) => {  // well-formed: Python refuses unpaired surrogates
    try { return apply(wellFormed, toStr(v), []); } catch (e) { return 'unprintable value'; }
  };
  const bad = (m) => '{"s":"bad_result","m":' + stringify(m) + '}';
  const requester = (call) => function (spec) {
    return new PromiseCtor(function (resolve, reject) {
      if (call.done) { reject(new ErrorCtor('the handler call is over')); return; }
      const id = call.next++;
      call.waiters[id] = [resolve, reject];
      call.pending += (call.pending === '' ? '[' : ',[') + id + ',' + stringify(text(spec)) + ']';
    });
  };
  const finish = (token, call) => {
    delete calls[token];
    const v = call.value;
    if (call.ok) {
      if (v === undefined) return '{"s":"ok","v":null}';
      let out;
      try { out = stringify(v); } catch (e) { return bad(text(e && e.message)); }
      return out === undefined ? bad('a ' + typeof v) : '{"s":"ok","v":' + out + '}';
    }
    let m, c = null;
    try {
      if (v !== null && (typeof v === 'object' || typeof v === 'function')) {
        const code = v.code, message = v.message;
        if (typeof code === 'string') c = text(code);
        m = text(message === undefined ? v : message);
      } else m = text(v);
    } catch (e) { m = 'unprintable exception'; }
    return '{"s":"thrown","m":' + stringify(m) + ',"c":' + stringify(c) + '}';
  };
  return {
    start(token, key, code, drop, ctxJson) {
      if (drop !== null) delete handlers[drop];
      if (code !== null) {
        try { handlers[key] = new AsyncFunction('ctx', code); }
        catch (e) { return '{"s":"syntax","m":' + stringify(text(e && e.message)) + '}'; }
      }
      const handler = handlers[key];
      if (handler === undefined) return '{"s":"missing"}';
      const call = create(null);
      call.done = false; call.ok = false; call.value = undefined;
      call.next = 0; call.waiters = create(null); call.pending = '';
      calls[token] = call;
      const ctx = parse(ctxJson);
      if (makeDb !== null) {
        const desc = create(null);
        desc.value = makeDb(requester(call));
        desc.writable = desc.enumerable = desc.configurable = true;
        define(ctx, 'db', desc);
      }
      const settle = (ok) => (v) => {
        if (!call.done) { call.done = true; call.ok = ok; call.value = v; }
      };
      try { apply(then, handler(ctx), [settle(true), settle(false)]); }
      catch (e) { settle(false)(e); }
      return '';
    },
    step(token, deliveries) {
      const call = calls[token];
      if (call === undefined) return '{"s":"gone"}';
      for (let i = 0; i < deliveries.length; i++) {
        const d = deliveries[i], w = call.waiters[d[0]];
        if (w === undefined) continue;
        delete call.waiters[d[0]];
        if (d[1] === 1) w[0](d[2]); else w[1](new ErrorCtor(d[2]));
      }
      if (call.done) return finish(token, call);
      if (call.pending === '') return '{"s":"wait"}';
      const out = '{"s":"db","q":[' + call.pending + ']}';
      call.pending = '';
      return out;
    },
  };
})((function () {
__DB_CLIENT__
;return (function (m) { try { delete globalThis.__modgateMakeDb; } catch (e) {} return m; })(
  typeof __modgateMakeDb === 'function' ? __modgateMakeDb : null);
})());
"""

# Compiles (never runs) a handler body exactly as `start` does; returns '' or the error message.
_CHECK: Final = """(() => {
  try { new (async function () {}).constructor('ctx', __CODE__); return ''; }
  catch (e) { return String(e && e.message); } })()"""
_PARSE_ERROR = re.compile(r"<anonymous>:(\d+): (SyntaxError: [^\n]*)")
_WRAP_LINES: Final = 2  # lines before the body in the script _locate parses


def _js(value: str) -> str:
    """A JS string literal (JSON strings are valid JS since ES2019)."""
    return orjson.dumps(value).decode()


class HandlerError(Exception):
    """A failed handler call; `message` is safe to show a client and carries no stack trace."""

    def __init__(self, kind: str, message: str, code: str | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind  # timeout | memory | syntax | thrown | bad_result | crashed
        self.message = message
        self.code = code


class _Isolate:
    __slots__ = ("api", "doomed", "handlers", "in_flight", "key", "racer")

    def __init__(self, key: str, racer: MiniRacer, api: str) -> None:
        self.key = key
        self.racer = racer
        self.api = f"'use strict';{api}"  # strict: no stack-trace API hands out our frames
        self.handlers: OrderedDict[str, str | None] = OrderedDict()  # None, or a syntax error
        self.in_flight = 0
        self.doomed = False


class Sandbox:
    """Runs handler bodies in per-(module, site) isolates with a time limit and memory cap."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        max_isolates: int = DEFAULT_MAX_ISOLATES,
        max_handlers: int = DEFAULT_MAX_HANDLERS,
        db_client_js: str = "",
        watch_interval: float = DEFAULT_WATCH_INTERVAL,
    ) -> None:
        self.timeout = timeout
        self.watch_interval = watch_interval
        self.memory_limit = memory_limit
        self.max_isolates = max_isolates
        self.max_handlers = max_handlers
        self._db_client_js = db_client_js
        self._isolates: OrderedDict[str, _Isolate] = OrderedDict()
        self._open: set[_Isolate] = set()
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None
        self.compiles = 0
        self.isolates_opened = 0
        self.isolates_closed = 0
        self.runaways_stopped = 0  # isolates the watchdog closed

    def __repr__(self) -> str:
        return (
            f"<Sandbox isolates={len(self._isolates)}/{self.max_isolates} open={len(self._open)}"
            f" opened={self.isolates_opened} closed={self.isolates_closed}"
            f" compiles={self.compiles} runaways_stopped={self.runaways_stopped}>"
        )

    @property
    def isolates(self) -> int:
        """Isolates kept for reuse (at most max_isolates); a discarded one still running a
        call is not among them."""
        return len(self._isolates)

    async def run(
        self,
        *,
        isolate_key: str,
        handler_key: str,
        code: str,
        ctx: dict[str, Any],
        db: DbCall,
        deadline: float | None = None,
    ) -> Any:
        """Run one handler call; its return value (via JSON), or HandlerError. It is stopped at
        `deadline` (loop time; default: `timeout` from now)."""
        loop = asyncio.get_running_loop()
        if self._watchdog is None and not self._closed:
            self._watchdog = loop.create_task(self._watch())
        iso = self._acquire(isolate_key)
        try:
            async with asyncio.timeout_at(
                loop.time() + self.timeout if deadline is None else deadline
            ):
                return await self._call(iso, handler_key, code, ctx, db)
        except HandlerError as exc:
            if exc.kind in ("memory", "crashed"):
                self._discard(iso)
            raise
        except BaseException as exc:  # timed out, failed or cancelled mid-call
            self._discard(iso)
            if isinstance(exc, TimeoutError):
                if iso.racer.was_hard_memory_limit_reached():
                    raise HandlerError("memory", _MEMORY) from None
                raise HandlerError("timeout", f"the handler ran over {self.timeout:g} s") from None
            if isinstance(exc, Exception):
                raise HandlerError("crashed", f"engine failure ({type(exc).__name__})") from None
            raise
        finally:
            self._release(iso)

    async def close(self) -> None:
        """Close every isolate; those running calls close when the calls end (bounded)."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for iso in list(self._isolates.values()):
            self._discard(iso)
        deadline = asyncio.get_running_loop().time() + self.timeout + 1
        while self._open and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    @staticmethod
    def check(code: str) -> None:
        """Compile `code` as a handler body in a throwaway isolate, without running it."""
        racer = MiniRacer()
        try:
            error = racer.eval(_CHECK.replace("__CODE__", _js(code)))
            if error:
                raise HandlerError("syntax", _locate(racer, code, str(error)))
        finally:
            racer.close()

    async def _call(
        self, iso: _Isolate, handler_key: str, code: str, ctx: dict[str, Any], db: DbCall
    ) -> Any:
        cached = iso.handlers.get(handler_key)
        if cached is not None:
            raise HandlerError("syntax", cached)
        # The mirror changes right before the eval is queued and evals run in order, so JS
        # holds exactly the keys the mirror does by the time `start` runs.
        body, drop = "null", "null"
        if handler_key in iso.handlers:
            iso.handlers.move_to_end(handler_key)
        else:
            self.compiles += 1
            body, iso.handlers[handler_key] = _js(code), None
            if len(iso.handlers) > self.max_handlers:
                drop = _js(iso.handlers.popitem(last=False)[0])
        token, key = _js(secrets.token_hex(16)), _js(handler_key)
        ctx_json = _js(orjson.dumps(ctx, default=str).decode())
        reply = await _eval(iso, f"{iso.api}.start({token},{key},{body},{drop},{ctx_json})")
        if reply:
            state = orjson.loads(reply)
            if state["s"] != "syntax":  # "missing": compiled by a concurrent call that failed
                raise HandlerError("syntax", iso.handlers.get(handler_key) or "not compiled")
            racer = MiniRacer()
            try:
                iso.handlers[handler_key] = message = _locate(racer, code, state["m"])
            finally:
                racer.close()
            raise HandlerError("syntax", message)
        return await self._drive(iso, token, db)

    async def _drive(self, iso: _Isolate, token: str, db: DbCall) -> Any:
        """Step the call until it settles, serving its db requests in between."""
        deliveries, delivered, delay = "[]", False, 0.0
        while True:
            reply = await _eval(iso, f"{iso.api}.step({token},{deliveries})")
            deliveries = "[]"
            try:
                state = orjson.loads(reply)
            except orjson.JSONDecodeError:  # only a result can hold an unpaired surrogate
                raise HandlerError("bad_result", "the handler's result is not valid text") from None
            kind = state["s"]
            if kind == "db":
                deliveries, delivered, delay = await _serve(state["q"], db), True, 0.0
            elif kind == "wait":
                if delivered:  # continuations run right after the step that resumed them
                    delivered = False
                    continue
                if iso.racer.was_hard_memory_limit_reached():
                    raise HandlerError("memory", _MEMORY)
                await asyncio.sleep(delay)
                delay = min(delay * 2 or 0.001, _POLL_MAX)
            elif kind == "ok":
                return state["v"]
            elif kind == "thrown":
                raise HandlerError("thrown", str(state["m"])[:MESSAGE_LIMIT], state["c"])
            elif kind == "bad_result":
                message = f"the handler's result is not JSON: {state['m']}"
                raise HandlerError("bad_result", message[:MESSAGE_LIMIT])
            else:
                raise HandlerError("crashed", "the handler call was lost")

    async def _watch(self) -> None:
        """Close isolates that stay busy with no call in flight (see the Strategy above)."""
        while True:
            await asyncio.sleep(self.watch_interval)
            idle = [iso for iso in self._isolates.values() if iso.in_flight == 0]
            if idle:
                await asyncio.gather(*(self._probe(iso) for iso in idle))

    async def _probe(self, iso: _Isolate) -> None:
        iso.in_flight += 1  # the isolate is closed after the probe, never under it
        try:
            async with asyncio.timeout(self.watch_interval):
                await iso.racer.eval_cancelable("0")
        except Exception as exc:  # timed out: still running; or the engine failed
            self.runaways_stopped += 1
            module = iso.key.partition(":")[0]
            if isinstance(exc, TimeoutError):
                log.warning("an isolate of module %s ran on after its calls ended: closed", module)
            else:
                log.warning(
                    "an isolate of module %s failed (%s): closed", module, type(exc).__name__
                )
            self._discard(iso)
        finally:
            self._release(iso)

    def _acquire(self, key: str) -> _Isolate:
        if self._closed:
            raise HandlerError("crashed", "the sandbox is closed")
        iso = self._isolates.get(key)
        if iso is None:
            iso = self._isolates[key] = self._new_isolate(key)
            while len(self._isolates) > self.max_isolates:
                self._discard(next(iter(self._isolates.values())))
        else:
            self._isolates.move_to_end(key)
        iso.in_flight += 1
        return iso

    def _new_isolate(self, key: str) -> _Isolate:
        racer = MiniRacer()
        api = f"__mg_{secrets.token_hex(16)}"
        try:
            racer.set_hard_memory_limit(self.memory_limit)
            # Synchronous eval is safe here: nothing else can be running in a new isolate.
            racer.eval(
                _BOOTSTRAP.replace("__API__", api).replace("__DB_CLIENT__", self._db_client_js)
            )
        except Exception as exc:
            racer.close()
            log.error("isolate bootstrap failed: %s", exc)
            raise HandlerError("crashed", "the isolate could not be started") from None
        self.isolates_opened += 1
        iso = _Isolate(key, racer, api)
        self._open.add(iso)
        return iso

    def _discard(self, iso: _Isolate) -> None:
        """Drop `iso` from the LRU; it closes when its last call ends."""
        iso.doomed = True
        if self._isolates.get(iso.key) is iso:
            del self._isolates[iso.key]
        if iso.in_flight == 0:
            self._close_isolate(iso)

    def _release(self, iso: _Isolate) -> None:
        iso.in_flight -= 1
        if iso.doomed and iso.in_flight == 0:
            self._close_isolate(iso)

    def _close_isolate(self, iso: _Isolate) -> None:
        if iso in self._open:
            self._open.discard(iso)
            iso.racer.close()
            self.isolates_closed += 1


async def _eval(iso: _Isolate, script: str) -> str:
    try:
        reply = await iso.racer.eval_cancelable(script)
    except JSEvalException as exc:  # JSOOMException included
        if isinstance(exc, JSOOMException) or iso.racer.was_hard_memory_limit_reached():
            raise HandlerError("memory", _MEMORY) from None
        raise HandlerError("crashed", f"engine failure ({type(exc).__name__})") from None
    if not isinstance(reply, str):
        raise HandlerError("crashed", "the engine returned an unexpected value")
    return reply


async def _serve(requests: list[list[Any]], db: DbCall) -> str:
    """Run a step's db requests (concurrently) and encode the replies for the next step."""

    async def one(request_id: int, spec: str) -> str:
        try:
            result = await db(spec)
            if isinstance(result, str):
                return f"[{request_id},1,{_js(result)}]"
        except Exception as exc:  # never into JS raw: the handler sees a plain failure
            log.warning("handler db call failed: %s", type(exc).__name__)
        return f'[{request_id},0,"database call failed"]'

    if len(requests) == 1:
        return f"[{await one(int(requests[0][0]), str(requests[0][1]))}]"
    replies = await asyncio.gather(*(one(int(rid), str(spec)) for rid, spec in requests))
    return f"[{','.join(replies)}]"


def _locate(racer: MiniRacer, code: str, message: str) -> str:
    """The parser's message with the body's line number; `throw 0` keeps anything from running."""
    try:
        racer.eval(f"throw 0;\n(async function (ctx) {{\n{code}\n}})")
    except JSParseException as exc:
        found = _PARSE_ERROR.search(str(exc))
        if found and int(found[1]) > _WRAP_LINES:
            return f"{found[2]} (line {int(found[1]) - _WRAP_LINES})"
    except JSEvalException:
        pass
    return f"SyntaxError: {message}"
