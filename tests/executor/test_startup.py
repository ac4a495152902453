"""What `modgate executor` says at start: without database_url it runs handlers, but every
`ctx.db` call would answer db_unavailable, so it warns at once rather than per failed call."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.executor.service import Executor, build_executor_app
from proxy.settings import load_settings

NO_DATABASE = (
    "database_url is unset: handlers run, but every ctx.db call answers db_unavailable (a 500 "
    "for the client); set database_url (MODGATE_DATABASE_URL) to the database holding the "
    "modules' tables"
)
CALL = {"module_id": "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21", "handler_key": "s:1"}


@pytest.mark.parametrize(
    "database_url",
    # min_size=0: the pool opens no connection at start, so nothing needs to listen there.
    [None, "postgresql://modgate@127.0.0.1:1/platform"],
    ids=["unset", "set"],
)
async def test_warns_at_start_without_a_database(
    database_url: str | None, aiohttp_server: Any, tmp_path: Path, caplog: Any
) -> None:
    (tmp_path / "gw.yaml").write_text("{}\n")
    settings = load_settings(
        str(tmp_path / "gw.yaml"), environ={}, overrides={"database_url": database_url}
    )
    with caplog.at_level(logging.WARNING, logger="modgate.executor"):
        server = await aiohttp_server(build_executor_app(Executor(settings)))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ([NO_DATABASE] if database_url is None else [])
    if database_url is None:  # and it is what a handler's ctx.db call then meets
        code = "const { data, error } = await ctx.db.from('contacts').select('*'); return error;"
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}/v1/execute"
            async with session.post(url, json={**CALL, "code": code}) as r:
                assert (r.status, await r.json()) == (
                    200,
                    {"message": "database unavailable", "code": "db_unavailable"},
                )
