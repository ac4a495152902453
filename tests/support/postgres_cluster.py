"""A private, throwaway Postgres cluster for what must never be done to the shared server:
stopping it, killing it, restarting it.

`initdb` into a temporary directory, `pg_ctl start` on a free port of 127.0.0.1 with trust
auth and no fsync (the data is thrown away), and then `stop()` / `start()` at will. Postgres
refuses to run as root, so as root the cluster runs as the `postgres` user (`runuser`).

Invariant: the server is stopped and its directory removed when `close()` returns or the
`with` block ends.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import asyncpg

from tests.support.polling import eventually
from tests.support.process import free_port

READY_TIMEOUT = 30.0


def find_pg_bin() -> Path:
    """The directory of initdb and pg_ctl: $TEST_PG_BIN, else Debian's newest version."""
    configured = os.environ.get("TEST_PG_BIN")
    candidates = [configured] if configured else sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    for candidate in reversed(candidates):
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        "a private Postgres cluster needs initdb and pg_ctl (Debian: postgresql); "
        "set TEST_PG_BIN to their directory"
    )


class PostgresCluster:
    """One private Postgres server on 127.0.0.1:`port`; `url` names its `postgres` database."""

    def __init__(self) -> None:
        self.bin = find_pg_bin()
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="modgate-pg-"))
        self.data = self._dir / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self._dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off -k {self._dir}"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self._dir / "log"),
            "-w", "-t", str(int(READY_TIMEOUT)), "start",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: connections are cut; `immediate`: like a crash)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self._dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}{tail}")

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<PostgresCluster 127.0.0.1:{self.port} {state}>"


async def wait_ready(url: str, timeout: float = READY_TIMEOUT) -> None:
    """Until `url` accepts a connection (pg_ctl -w says started a little early at times)."""

    async def accepts() -> bool:
        conn = await asyncpg.connect(url, timeout=1)
        await conn.close()
        return True

    await eventually(
        accepts,
        timeout=timeout,
        interval=0.1,
        what=f"Postgres accepts a connection at {url}",
        ignore=(OSError, asyncpg.PostgresError),  # still starting
    )
