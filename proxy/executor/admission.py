"""Which handler calls may run now in one executor worker: its slots, and each module's share.

Strategy: a call holds two slots while it runs, one of its module's (`module_concurrency` per
module) and one of the worker's (`concurrency`), taken in that order, so a call that waits for
its busy module holds nothing another module could use: a module whose handlers loop forever
fills its own slots, never the worker's. Waiting is first come, first served and bounded twice:
in number (`queue_size` calls waiting in the worker, past it a call is refused at once) and in
time (a call waits at most until its deadline, which also bounds its run, so the pool answers
within executor_timeout_seconds of a call's arrival, inside the gateway's own deadline). A
refused call never ran: a client may retry it whatever its method.

    the worker's slots all taken                  -> 503 executor_busy
    the module's taken, the worker has room       -> 503 module_busy

Across the pool: worker processes share one port (SO_REUSEPORT) and the kernel hands each new
connection to one of them, so the pool does not dispatch calls, the connections do. Every
worker applies the cap to what it receives: a module has at most
`module_concurrency * executor_workers` calls running pool-wide, however its calls are spread.
"""

from __future__ import annotations

import asyncio

from proxy.errors import ModuleBusy, PoolBusy
from proxy.observability import metrics


class ModuleSlots:
    """One module's share of a worker: its slots, and the calls holding or waiting for them."""

    __slots__ = ("id", "running", "slots", "users")

    def __init__(self, module_id: str, concurrency: int) -> None:
        self.id = module_id
        self.slots = asyncio.Semaphore(concurrency)
        self.running = 0  # calls holding both slots
        self.users = 0  # calls holding or waiting for one of the module's; at 0 the entry goes


class Admission:
    """The worker's call slots and the per-module cap: `acquire` both per call, then `release`."""

    __slots__ = (
        "_modules",
        "_worker",
        "concurrency",
        "module_concurrency",
        "queue_size",
        "waiting",
    )

    def __init__(self, *, concurrency: int, module_concurrency: int, queue_size: int) -> None:
        self.concurrency = concurrency
        self.module_concurrency = module_concurrency
        self.queue_size = queue_size
        self.waiting = 0
        self._worker = asyncio.Semaphore(concurrency)
        self._modules: dict[str, ModuleSlots] = {}

    def __repr__(self) -> str:
        running = {module_id: entry.running for module_id, entry in self._modules.items()}
        return (
            f"<Admission concurrency={self.concurrency} module_concurrency="
            f"{self.module_concurrency} waiting={self.waiting}/{self.queue_size} "
            f"running={running}>"
        )

    async def acquire(self, module_id: str, deadline: float) -> ModuleSlots:
        """A slot of `module_id` and one of the worker, for `release` once the call ends;
        PoolBusy when none is free and the queue is full, or none frees up before `deadline`
        (loop time)."""
        entry = self._modules.get(module_id)
        if entry is None:
            entry = self._modules[module_id] = ModuleSlots(module_id, self.module_concurrency)
        entry.users += 1
        try:
            await self._take(entry.slots, deadline, module=True)
        except BaseException:
            self._leave(entry)
            raise
        try:
            await self._take(self._worker, deadline, module=False)
        except BaseException:
            entry.slots.release()
            self._leave(entry)
            raise
        entry.running += 1
        return entry

    def release(self, entry: ModuleSlots) -> None:
        entry.running -= 1
        self._worker.release()
        entry.slots.release()
        self._leave(entry)

    def _leave(self, entry: ModuleSlots) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._modules[entry.id]

    async def _take(self, slots: asyncio.Semaphore, deadline: float, *, module: bool) -> None:
        if not slots.locked():  # locked() also when others wait: no overtaking
            await slots.acquire()
            return
        if self.waiting >= self.queue_size:
            raise self._refusal(module)
        self.waiting += 1
        metrics.EXECUTOR_WAITING.inc()
        try:
            async with asyncio.timeout_at(deadline):
                await slots.acquire()
        except TimeoutError:
            raise self._refusal(module) from None
        finally:
            self.waiting -= 1
            metrics.EXECUTOR_WAITING.dec()

    def _refusal(self, module: bool) -> PoolBusy:
        # module_busy only while the worker has room: then the module's share is what is full
        # (its slots may be held by calls that themselves wait for the worker).
        return ModuleBusy() if module and not self._worker.locked() else PoolBusy()
