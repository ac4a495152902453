"""The sandbox against a real V8 (mini-racer): results, errors, limits, isolation, caching."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.executor.sandbox import DbCall, HandlerError, Sandbox
from tests.support.polling import eventually

# A stand-in for DB_CLIENT_JS: `await ctx.db.from(t)` sends {"table": t} and parses the reply.
FAKE_DB_JS = """
function __modgateMakeDb(call) {
  return { from: (t) => ({ then: (res, rej) =>
    call(JSON.stringify({ table: t })).then((s) => JSON.parse(s)).then(res, rej) }) };
}
"""
CTX = {
    "params": {"id": "42"},
    "query": {"q": "x"},
    "body": {"name": "Ada"},
    "headers": {"accept": "application/json"},
    "user": {"id": "u1"},
    "site": {"id": "s1"},
}


def tagged_db(tag: str, log: list[str] | None = None) -> DbCall:
    """A db whose replies name `tag` and the table asked for."""

    async def db(spec: str) -> str:
        table = json.loads(spec)["table"]
        if log is not None:
            log.append(f"{tag}:{table}")
        return json.dumps({"data": {"db": tag, "table": table}, "error": None})

    return db


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    sb = Sandbox(timeout=2.0, memory_limit=32 << 20, db_client_js=FAKE_DB_JS)
    yield sb
    await sb.close()


@pytest.fixture
async def strict() -> AsyncIterator[Sandbox]:
    sb = Sandbox(timeout=0.2, memory_limit=32 << 20, db_client_js=FAKE_DB_JS)
    yield sb
    await sb.close()


async def run(
    sb: Sandbox,
    code: str,
    *,
    key: str = "mod1:site1",
    handler: str | None = None,
    ctx: dict[str, Any] | None = None,
    db: DbCall | None = None,
) -> Any:
    return await sb.run(
        isolate_key=key,
        handler_key=handler or code,
        code=code,
        ctx=CTX if ctx is None else ctx,
        db=db or tagged_db("main"),
    )


async def fails(sb: Sandbox, code: str, kind: str, **kwargs: Any) -> HandlerError:
    with pytest.raises(HandlerError) as caught:
        await run(sb, code, **kwargs)
    assert caught.value.kind == kind, caught.value
    return caught.value


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("return { a: 1, b: [1, 'two', null], c: { d: true } };",
         {"a": 1, "b": [1, "two", None], "c": {"d": True}}),
        ("return [1, 2, 3];", [1, 2, 3]),
        ("return null;", None),
        ("return;", None),
        ("return 'text';", "text"),
        ("return 1.5;", 1.5),
        ("return { skipped: undefined, kept: 1 };", {"kept": 1}),
    ],
)  # fmt: skip
async def test_return_values_come_back_as_json(
    sandbox: Sandbox, code: str, expected: object
) -> None:
    assert await run(sandbox, code) == expected


async def test_ctx_fields_are_visible(sandbox: Sandbox) -> None:
    code = "const { db, ...rest } = ctx; return { rest, db: typeof db.from };"
    assert await run(sandbox, code) == {"rest": CTX, "db": "function"}


async def test_crm_style_handler_reads_through_its_db(sandbox: Sandbox) -> None:
    code = """const { data, error } = await ctx.db.from('contacts');
      if (error) throw error;
      return { contacts: data };"""
    assert await run(sandbox, code) == {"contacts": {"db": "main", "table": "contacts"}}


async def test_without_a_db_client_ctx_has_no_db() -> None:
    sb = Sandbox(timeout=2.0)
    try:
        assert await run(sb, "return typeof ctx.db;") == "undefined"
    finally:
        await sb.close()


async def test_thrown_error_keeps_its_message_only(sandbox: Sandbox) -> None:
    exc = await fails(sandbox, "throw new Error('contact not found');", "thrown")
    assert (exc.message, exc.code) == ("contact not found", None)
    exc = await fails(sandbox, "throw 'plain string';", "thrown")
    assert exc.message == "plain string"
    exc = await fails(sandbox, "throw new Error('x'.repeat(2000));", "thrown")
    assert exc.message == "x" * 500


async def test_thrown_supabase_error_keeps_its_code(sandbox: Sandbox) -> None:
    code = "throw { message: 'JSON object requested, multiple (or no) rows', code: 'PGRST116' };"
    exc = await fails(sandbox, code, "thrown")
    assert exc.message.startswith("JSON object requested")
    assert exc.code == "PGRST116"
    exc = await fails(sandbox, "throw { message: 'numeric code', code: 23505 };", "thrown")
    assert exc.code is None


async def test_db_failure_reaches_the_handler_as_a_rejection(sandbox: Sandbox) -> None:
    async def broken(spec: str) -> str:
        raise OSError("connection refused to 10.0.0.5")

    code = "try { await ctx.db.from('t'); } catch (e) { return e.message; }"
    assert await run(sandbox, code, db=broken) == "database call failed"


async def test_syntax_error_via_run_names_the_line(sandbox: Sandbox) -> None:
    code = "const a = 1;\nreturn a +;"
    exc = await fails(sandbox, code, "syntax")
    assert exc.message == "SyntaxError: Unexpected token ';' (line 2)"
    compiles = sandbox.compiles
    await fails(sandbox, code, "syntax")  # the failure is cached with the handler key
    assert sandbox.compiles == compiles


def test_check_accepts_valid_code_and_rejects_invalid_code() -> None:
    Sandbox.check("const { data } = await ctx.db.from('t'); return data;")
    with pytest.raises(HandlerError) as caught:
        Sandbox.check("return {;")
    assert caught.value.kind == "syntax"
    assert "(line 1)" in caught.value.message


def test_check_never_runs_the_code() -> None:
    started = time.perf_counter()
    Sandbox.check("while (true) {}")
    with pytest.raises(HandlerError):  # breaking out of the function body does not compile
        Sandbox.check("}); while (true) {}; (function () {")
    assert time.perf_counter() - started < 1.0


async def test_non_json_results_are_bad_results(sandbox: Sandbox) -> None:
    for code in ("return () => 1;", "const a = {}; a.self = a; return a;", "return 10n;"):
        exc = await fails(sandbox, code, "bad_result")
        assert exc.message.startswith("the handler's result is not JSON")
    await fails(sandbox, "return { s: '\\ud800' };", "bad_result")  # an unpaired surrogate
    assert sandbox.isolates_closed == 0  # a bad result costs nothing but the call


async def test_unpaired_surrogates_in_a_thrown_message_are_replaced(sandbox: Sandbox) -> None:
    exc = await fails(sandbox, "throw new Error('bad \\ud800 text');", "thrown")
    assert exc.message == "bad \ufffd text"


async def test_busy_loop_times_out_and_the_key_keeps_working(strict: Sandbox) -> None:
    started = time.perf_counter()
    await fails(strict, "while (true) {}", "timeout")
    assert time.perf_counter() - started < 0.6
    assert await run(strict, "return 'next';") == "next"


async def test_loop_after_an_await_times_out_and_the_key_keeps_working(strict: Sandbox) -> None:
    # Promise continuations run outside mini-racer's cancelable tasks: the isolate is replaced.
    started = time.perf_counter()
    await fails(strict, "await ctx.db.from('t'); while (true) {}", "timeout")
    assert time.perf_counter() - started < 0.6
    assert await run(strict, "return 'next';") == "next"
    assert strict.isolates_closed == 1


async def test_memory_bomb_hits_the_limit_and_the_key_keeps_working(sandbox: Sandbox) -> None:
    bomb = "const a = []; while (true) a.push(new Array(1e5).fill(1.5));"
    started = time.perf_counter()
    await fails(sandbox, bomb, "memory")
    assert time.perf_counter() - started < 1.5
    assert sandbox.isolates_closed == 1
    assert await run(sandbox, "return 'next';") == "next"


async def test_memory_bomb_after_an_await_hits_the_limit(sandbox: Sandbox) -> None:
    bomb = "await ctx.db.from('t'); const a = []; while (true) a.push(new Array(1e5).fill(1.5));"
    await fails(sandbox, bomb, "memory")
    assert await run(sandbox, "return 'next';") == "next"


async def test_timers_work_within_the_deadline(sandbox: Sandbox) -> None:
    code = "await new Promise((r) => setTimeout(r, 20)); return 'late';"
    assert await run(sandbox, code) == "late"


@pytest.mark.parametrize(
    "code",
    [
        "return typeof require;",
        "return typeof process;",
        "return typeof fetch;",
        "return typeof XMLHttpRequest;",
        "return typeof globalThis.__modgateMakeDb;",
        "return eval('typeof require');",
        "return typeof Function('return this')().process;",
    ],
)
async def test_escape_attempts_find_nothing(sandbox: Sandbox, code: str) -> None:
    assert await run(sandbox, code) == "undefined"


async def test_no_global_names_the_sandbox(sandbox: Sandbox) -> None:
    code = "return Reflect.ownKeys(globalThis).map(String).filter((k) => /modgate|__mg_/.test(k));"
    assert await run(sandbox, code) == []


async def test_stack_frames_do_not_hand_out_the_sandbox_functions(sandbox: Sandbox) -> None:
    code = """
      Error.prepareStackTrace = (e, frames) => frames.slice(1).map((f) => [
        typeof f.getFunction(), typeof f.getThis()]);
      const stack = new Error().stack;
      delete Error.prepareStackTrace;
      return stack;"""
    frames = await run(sandbox, code)
    assert frames and all(frame == ["undefined", "undefined"] for frame in frames)


async def test_a_db_kept_from_an_earlier_call_is_dead(sandbox: Sandbox) -> None:
    first: list[str] = []
    await run(sandbox, "globalThis.kept = ctx.db; return 1;", db=tagged_db("first", first))
    code = "try { await kept.from('stolen'); return 'reached'; } catch (e) { return e.message; }"
    assert await run(sandbox, code, db=tagged_db("second")) == "the handler call is over"
    assert first == []


async def test_globals_are_shared_per_isolate_key_only(sandbox: Sandbox) -> None:
    await run(sandbox, "globalThis.leak = 'mod1 site1 data'; return 1;", key="mod1:site1")
    peek = "return typeof leak === 'undefined' ? null : leak;"
    assert await run(sandbox, peek, key="mod1:site1") == "mod1 site1 data"
    assert await run(sandbox, peek, key="mod1:site2") is None
    assert await run(sandbox, peek, key="mod2:site1") is None


async def test_concurrent_calls_in_one_isolate_get_their_own_db(sandbox: Sandbox) -> None:
    parked, gate = asyncio.Event(), asyncio.Event()
    log: list[str] = []

    async def slow(spec: str) -> str:
        parked.set()
        await gate.wait()
        return await tagged_db("slow", log)(spec)

    code = """const first = await ctx.db.from('a' + ctx.params.id);
      const second = await ctx.db.from('b' + ctx.params.id);
      return [first.data, second.data];"""
    call_a = asyncio.create_task(run(sandbox, code, ctx={"params": {"id": "A"}}, db=slow))
    await asyncio.wait_for(parked.wait(), 10)  # call A is parked at its first ctx.db await
    result_b = await run(sandbox, code, ctx={"params": {"id": "B"}}, db=tagged_db("fast", log))
    gate.set()
    result_a = await call_a
    assert result_b == [{"db": "fast", "table": "aB"}, {"db": "fast", "table": "bB"}]
    assert result_a == [{"db": "slow", "table": "aA"}, {"db": "slow", "table": "bA"}]
    assert log == ["fast:aB", "fast:bB", "slow:aA", "slow:bA"]
    assert sandbox.isolates_opened == 1


async def test_parallel_db_requests_in_one_call(sandbox: Sandbox) -> None:
    code = """const rows = await Promise.all([ctx.db.from('x'), ctx.db.from('y')]);
      return rows.map((r) => r.data.table);"""
    assert await run(sandbox, code) == ["x", "y"]


async def test_handlers_compile_once_per_key_and_isolate(sandbox: Sandbox) -> None:
    for _ in range(3):
        assert await run(sandbox, "return 1;", handler="route1:v1") == 1
    assert sandbox.compiles == 1
    # a new version is a new key; the cached body is used for a known key, whatever `code` says
    assert await run(sandbox, "return 2;", handler="route1:v2") == 2
    assert await run(sandbox, "return 3;", handler="route1:v1") == 1
    assert await run(sandbox, "return 1;", handler="route1:v1", key="mod1:site2") == 1
    assert sandbox.compiles == 3


async def test_handler_cache_is_an_lru() -> None:
    sb = Sandbox(timeout=2.0, max_handlers=2)
    try:
        for handler in ("a", "b", "a", "c", "a", "b"):
            await run(sb, f"return '{handler}';", handler=handler)
        assert sb.compiles == 4  # a, b, c, then b again (evicted by c)
    finally:
        await sb.close()


async def test_isolate_lru_closes_evicted_isolates() -> None:
    sb = Sandbox(timeout=2.0, max_isolates=2)
    try:
        for key in ("m:1", "m:2", "m:3"):
            await run(sb, "globalThis.seen = true; return 1;", key=key)
        assert (sb.isolates_opened, sb.isolates_closed) == (3, 1)
        assert "isolates=2/2" in repr(sb)
        assert await run(sb, "return typeof seen;", key="m:1") == "undefined"
    finally:
        await sb.close()
    assert sb.isolates_closed == sb.isolates_opened == 4


async def test_closed_sandbox_refuses_calls() -> None:
    sb = Sandbox(timeout=2.0)
    await run(sb, "return 1;")
    await sb.close()
    assert sb.isolates_closed == 1
    exc = await fails(sb, "return 1;", "crashed")
    assert exc.message == "the sandbox is closed"


async def test_close_waits_for_calls_in_flight() -> None:
    sb = Sandbox(timeout=2.0, db_client_js=FAKE_DB_JS)
    parked, gate = asyncio.Event(), asyncio.Event()

    async def slow(spec: str) -> str:
        parked.set()
        await gate.wait()
        return await tagged_db("slow")(spec)

    call = asyncio.create_task(run(sb, "return (await ctx.db.from('t')).data.db;", db=slow))
    await asyncio.wait_for(parked.wait(), 10)
    closing = asyncio.create_task(sb.close())
    # close() has let go of the isolate (the LRU is empty) and waits for the call: whatever it
    # would close under a running call, it has closed by now.
    await eventually(lambda: sb.isolates == 0, what="close() has dropped the isolate")
    assert not closing.done() and sb.isolates_closed == 0  # never closed under a running call
    gate.set()
    assert await call == "slow"
    await closing
    assert sb.isolates_closed == 1
