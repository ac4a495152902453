"""Back-pressure: past the running and waiting bounds the pool answers 503 at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxy.errors import PoolBusy
from proxy.executor.service import Executor
from proxy.settings import load_settings

MODULE = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"
SLOW = "await new Promise(resolve => setTimeout(resolve, 300)); return 'done';"


async def test_full_pool_sheds_load_with_503(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text("{}\n")
    settings = load_settings(
        str(tmp_path / "gw.yaml"),
        environ={},
        overrides={"executor_concurrency": 1, "executor_queue_size": 1},
    )
    executor = Executor(settings)
    await executor.start()
    try:
        call = {"module_id": MODULE, "site_id": None, "handler_key": "slow:1", "code": SLOW}
        running = asyncio.create_task(executor.execute(call))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(executor.execute(call))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolBusy) as refused:  # one running, one waiting: no room
            await executor.execute(call)
        assert (refused.value.status, refused.value.code) == (503, "executor_busy")
        assert await running == "done"
        assert await waiting == "done"
    finally:
        await executor.stop()
