"""A private, throwaway `redis-server` for tests that kill, hang and restart Redis.

Failure tests never touch the shared Redis: each starts its own server on a free port, with no
persistence (`--save '' --appendonly no`) in a directory of its own, and may then
- `kill()` it (SIGKILL: connections reset, new ones refused),
- `stop()` / `cont()` it (SIGSTOP / SIGCONT: a Redis that hangs without closing connections;
  the kernel still accepts new connections into the listen backlog, nothing answers),
- `restart()` it on the same port (empty: no keys, no scripts), waiting until it answers PING.

Invariant: the process is gone when `close()` returns, when the `with` block ends, and, as a
last resort, when the object is collected or the interpreter exits (a weakref finalizer).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path
from types import TracebackType

from tests.support.polling import eventually_sync
from tests.support.process import free_port

REDIS_SERVER_ENV = "TEST_REDIS_SERVER"  # path to a redis-server binary, else found on PATH
READY_TIMEOUT = 10.0


class RedisServerMissing(RuntimeError):
    """No `redis-server` binary to start."""


def find_redis_server() -> str:
    """The redis-server binary: $TEST_REDIS_SERVER, else the one on PATH."""
    path = os.environ.get(REDIS_SERVER_ENV) or shutil.which("redis-server")
    if path is None or not os.access(path, os.X_OK):
        where = "CI must install it" if os.environ.get("CI") == "true" else "install it"
        raise RedisServerMissing(
            "redis-server is required by the Redis failure tests (they start a private one "
            f"to kill, hang and restart) and was not found; {where} (e.g. `apt-get install "
            f"redis-server`) or set {REDIS_SERVER_ENV} to its path"
        )
    return path


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()  # SIGKILL also ends a SIGSTOPped process
    proc.wait()


class RedisServer:
    """One private `redis-server` process on 127.0.0.1, restartable on the same port."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.binary = find_redis_server()
        self.port = free_port()
        self._tmp = None if directory is not None else tempfile.mkdtemp(prefix="modgate-redis-")
        self.dir = Path(directory if directory is not None else self._tmp)  # type: ignore[arg-type]
        self.log_path = self.dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False
        self._finalizer: weakref.finalize[..., None] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RedisServer:
        """Start the server and return once it answers PING."""
        assert not self.running, "already running"
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.stopped = False
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _terminate, self.proc)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}:\n{self._log_tail()}"
                )
            return self.ping()

        eventually_sync(
            answers,
            timeout=READY_TIMEOUT,
            interval=0.005,
            what=f"redis-server on port {self.port} answers PING",
        )

    def ping(self, timeout: float = 0.5) -> bool:
        """True when the server answers PING now (a raw socket: no client library state)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server vanishes at once, as in a crash (its data with it)."""
        assert self.proc is not None and self.running, "not running"
        self.proc.kill()
        self.proc.wait()
        self.stopped = False

    def stop(self) -> None:
        """SIGSTOP: the server hangs, connections stay open and unanswered."""
        assert self.proc is not None and self.running, "not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        """SIGCONT: a hung server carries on (its data and scripts intact)."""
        assert self.proc is not None and self.running, "not running"
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def restart(self) -> RedisServer:
        """A fresh server on the same port (killed first if still running)."""
        if self.running:
            self.kill()
        return self.start()

    def close(self) -> None:
        """Kill the server (if any) and remove the directory this object created."""
        if self.proc is not None:
            _terminate(self.proc)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self.running:
            state = "down"
        else:
            state = "hung" if self.stopped else "up"
        return f"<RedisServer 127.0.0.1:{self.port} {state}>"
