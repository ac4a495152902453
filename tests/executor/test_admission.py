"""Admission: the worker's slots and each module's cap, with real asyncio tasks (no clock)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from proxy.errors import ModuleBusy, PoolBusy
from proxy.executor.admission import Admission

FAR = 1e12  # a deadline no test reaches


class Calls:
    """Calls that hold their slots until the test releases them."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.running: dict[str, asyncio.Event] = {}  # name -> set while holding its slots
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._release: dict[str, asyncio.Event] = {}

    async def start(self, name: str, module: str, deadline: float = FAR) -> asyncio.Task[None]:
        running, release = asyncio.Event(), asyncio.Event()
        self.running[name], self._release[name] = running, release

        async def call() -> None:
            slots = await self.admission.acquire(module, deadline)
            try:
                running.set()
                await release.wait()
            finally:
                self.admission.release(slots)

        self.tasks[name] = task = asyncio.create_task(call())
        await asyncio.sleep(0)  # it runs up to its first wait: a slot, or the release
        return task

    def release(self, name: str) -> None:
        self._release[name].set()

    async def close(self) -> None:
        for event in self._release.values():
            event.set()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


@pytest.fixture
async def calls() -> AsyncIterator[Calls]:
    held = Calls(Admission(concurrency=4, module_concurrency=2, queue_size=8))
    yield held
    await held.close()


async def test_module_past_its_cap_waits_while_other_modules_run(calls: Calls) -> None:
    await calls.start("a1", "A")
    await calls.start("a2", "A")
    await calls.start("a3", "A")
    assert calls.running["a1"].is_set() and calls.running["a2"].is_set()
    assert not calls.running["a3"].is_set()  # A holds its 2 slots; the worker has 2 more
    await calls.start("b1", "B")
    await calls.start("b2", "B")
    assert calls.running["b1"].is_set() and calls.running["b2"].is_set()
    assert calls.admission.waiting == 1
    assert "running={'A': 2, 'B': 2}" in repr(calls.admission)

    calls.release("a1")
    await calls.running["a3"].wait()  # A's own slot freed: its waiting call runs


async def test_waiting_for_a_module_holds_no_worker_slot(calls: Calls) -> None:
    for name in ("a1", "a2", "a3", "a4", "a5"):  # 2 run, 3 wait for A's slots
        await calls.start(name, "A")
    assert calls.admission.waiting == 3
    await calls.start("b1", "B")
    await calls.start("c1", "C")
    assert calls.running["b1"].is_set() and calls.running["c1"].is_set()


async def test_waiting_calls_run_first_come_first_served(calls: Calls) -> None:
    for name in ("a1", "a2", "a3", "a4"):
        await calls.start(name, "A")
    calls.release("a2")
    await calls.running["a3"].wait()
    assert not calls.running["a4"].is_set()
    calls.release("a1")
    await calls.running["a4"].wait()


async def test_full_queue_refuses_at_once_with_the_right_code() -> None:
    held = Calls(Admission(concurrency=2, module_concurrency=1, queue_size=1))
    try:
        await held.start("a1", "A")
        await held.start("a2", "A")  # waits: the queue's one place
        with pytest.raises(ModuleBusy) as module_busy:
            await held.admission.acquire("A", FAR)
        assert (module_busy.value.status, module_busy.value.code) == (503, "module_busy")

        await held.start("b1", "B")  # the worker's second slot
        with pytest.raises(PoolBusy) as worker_busy:  # C is free, the worker is not
            await held.admission.acquire("C", FAR)
        assert type(worker_busy.value) is PoolBusy
        assert (worker_busy.value.status, worker_busy.value.code) == (503, "executor_busy")
    finally:
        await held.close()


async def test_a_call_still_waiting_at_its_deadline_is_refused(calls: Calls) -> None:
    await calls.start("a1", "A")
    await calls.start("a2", "A")
    deadline = asyncio.get_running_loop().time() + 0.05  # nobody frees a slot before it
    late = await calls.start("a3", "A", deadline)
    with pytest.raises(ModuleBusy):
        await late
    assert calls.admission.waiting == 0
    calls.release("a1")
    await calls.start("a4", "A")
    assert calls.running["a4"].is_set()  # the refused call took nothing with it


async def test_module_entries_go_when_their_calls_end(calls: Calls) -> None:
    await calls.start("a1", "A")
    await calls.start("b1", "B")
    calls.release("a1")
    calls.release("b1")
    await asyncio.gather(calls.tasks["a1"], calls.tasks["b1"])
    assert "running={}" in repr(calls.admission)


async def test_a_cancelled_waiter_leaves_no_trace(calls: Calls) -> None:
    await calls.start("a1", "A")
    await calls.start("a2", "A")
    waiter = await calls.start("a3", "A")
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert calls.admission.waiting == 0
    calls.release("a1")
    await calls.start("a4", "A")
    assert calls.running["a4"].is_set()
