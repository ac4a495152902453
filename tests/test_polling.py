"""tests/support/polling.py: the value comes back, and a failure says what was awaited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.polling import eventually, eventually_sync


async def test_returns_the_first_value_that_holds() -> None:
    values = iter([0, 0, 3, 4])
    assert await eventually(lambda: next(values), interval=0) == 3


async def test_awaits_an_async_check_and_applies_until() -> None:
    calls: list[int] = []

    async def count() -> int:
        calls.append(1)
        return len(calls)

    assert await eventually(count, until=lambda n: n >= 3, interval=0) == 3


async def test_a_timeout_names_the_check_and_its_last_value() -> None:
    with pytest.raises(AssertionError) as caught:
        await eventually(lambda: [], timeout=0.05)
    assert str(caught.value) == (
        "not true after 0.05 s: await eventually(lambda: [], timeout=0.05) (last value: [])"
    )


async def test_ignored_errors_mean_not_yet_others_fail_at_once() -> None:
    tries: Iterator[OSError | str] = iter([OSError("refused"), OSError("refused"), "up"])

    def probe() -> str:
        value = next(tries)
        if isinstance(value, Exception):
            raise value
        return value

    assert await eventually(probe, interval=0, ignore=(OSError,)) == "up"
    with pytest.raises(AssertionError, match="last value: OSError"):
        eventually_sync(probe_refused, timeout=0.02, what="x", ignore=(OSError,))
    with pytest.raises(ValueError):
        await eventually(exited)


def probe_refused() -> bool:
    raise OSError("refused")


def exited() -> bool:
    raise ValueError("the process exited")
