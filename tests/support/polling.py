"""Waiting in tests for a condition to hold, instead of sleeping a fixed time and hoping.

    await eventually(lambda: log.held == 0)
    row = await eventually(fetch_row, what="the request's log row")  # an async check
    await eventually(count_rows, until=lambda n: n == 25)  # a failure shows the last count
    eventually_sync(server.ping, what="redis-server answers PING")

Strategy:
- A check is polled until its value is true (or passes `until`), and that value is returned,
  so a test can wait for a row and then assert on it. A passing wait costs only as long as the
  condition takes, so the timeout is generous (a loaded two-CPU runner is slow, not broken): it
  only bounds a failure.
- A failure says what was awaited and the last value seen: `what`, or else the check's source
  when it is a lambda, else its name.
- An exception from the check fails the wait at once (a process that exited will not come back),
  except the types named in `ignore`, which count as "not yet" (a port that refuses connections
  while the server starts).
- A condition that must *not* happen cannot be polled for: wait for the state in which it would
  have happened, then assert.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final, TypeVar, cast, overload

DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_INTERVAL: Final = 0.01

T = TypeVar("T")

_NOTHING: Final = "(the check never returned)"
_PAUSE: Final = object()  # what _tries yields between tries


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], object] = ...,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    *,
    until: Callable[[T], object] = ...,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    until: Callable[[Any], object] = bool,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    what: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll `check` (sync or async) until `until(value)` is true; return that value."""
    tries = _tries(check, until, timeout, what, ignore)
    try:
        step = next(tries)
        while True:
            if step is _PAUSE:
                await asyncio.sleep(interval)
                step = next(tries)
                continue
            try:
                value = await step
            except BaseException as exc:
                step = tries.throw(exc)
            else:
                step = tries.send(value)
    except StopIteration as done:
        return done.value


def eventually_sync(
    check: Callable[[], T],
    *,
    until: Callable[[T], object] = bool,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    what: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """`eventually` for code without an event loop: blocks the thread between tries."""
    tries = _tries(check, until, timeout, what, ignore)
    try:
        step = next(tries)
        while True:
            if step is _PAUSE:
                time.sleep(interval)
            # A sync check's awaitable is its value, as it is: nothing here awaits it.
            step = tries.send(step)
    except StopIteration as done:
        return cast(T, done.value)


def _tries(
    check: Callable[[], Any],
    until: Callable[[Any], object],
    timeout: float,
    what: str | None,
    ignore: tuple[type[BaseException], ...],
) -> Generator[Any, Any, Any]:
    """The wait itself, without its I/O: both loops above drive it.

    Yields _PAUSE when the driver should wait `interval` before the next try, and a check's
    awaitable for the driver to resolve (its value is sent back, its exception thrown in);
    returns the value that passed, raises AssertionError when the time is up.
    """
    deadline = time.monotonic() + timeout
    last: object = _NOTHING
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = yield value
        except ignore as exc:
            last = exc
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(check, what, timeout, last))
        yield _PAUSE


def _failure(check: Callable[[], object], what: str | None, timeout: float, last: object) -> str:
    return f"not true after {timeout:g} s: {what or _describe(check)} (last value: {last!r})"


def _describe(check: Callable[[], object]) -> str:
    name = getattr(check, "__qualname__", repr(check))
    if name.endswith("<lambda>"):
        try:
            return inspect.getsource(check).strip()
        except (OSError, TypeError):
            pass
    return str(name)
