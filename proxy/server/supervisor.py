"""`--workers N`: N worker processes share the public port with SO_REUSEPORT.

The kernel spreads new connections across the workers' sockets. The supervisor starts no event
loop of its own: it forwards SIGTERM/SIGINT/SIGHUP to the workers, restarts a worker that dies
unexpectedly (with backoff), and gives up when a worker exits with the fatal code (bad config,
port in use), because restarting would fail the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import multiprocess

from proxy.exit_codes import EXIT_FATAL, EXIT_OK
from proxy.retry import Backoff
from proxy.server.worker import worker_main
from proxy.settings import Settings

log = logging.getLogger("modgate.supervisor")

# Past the grace period a worker gets this long to exit before it is killed.
KILL_AFTER_GRACE_SECONDS = 5.0


WorkerMain = Callable[[Settings, bool], None]


class Supervisor:
    """Runs `count` processes of `target` (the gateway worker by default) sharing a port."""

    def __init__(
        self, settings: Settings, *, target: WorkerMain = worker_main, count: int | None = None
    ) -> None:
        self.settings = settings
        self.target = target
        self.count = count if count is not None else settings.workers
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        self._stopping = False
        self._backoff = Backoff(maximum=10.0, initial=0.5)

    def _spawn(self) -> BaseProcess:
        proc = self._ctx.Process(
            target=self.target, args=(self.settings, True), name="modgate-worker", daemon=False
        )
        proc.start()
        return proc

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        for proc in self._workers:
            if proc.pid is not None and proc.is_alive():
                signal_to_send = signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM
                try:
                    os.kill(proc.pid, signal_to_send)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._signal)
        # Workers keep their metric values in files here; any worker's /metrics sums them all.
        with tempfile.TemporaryDirectory(prefix="modgate-metrics-") as metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            try:
                return self._supervise()
            finally:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]

    def _supervise(self) -> int:
        self._workers = [self._spawn() for _ in range(self.count)]
        log.info("supervising %d workers", len(self._workers))
        while not self._stopping:
            time.sleep(0.2)
            for i, proc in enumerate(self._workers):
                if proc.is_alive() or self._stopping:
                    continue
                code = proc.exitcode
                if proc.pid is not None:
                    # Its live gauges (queue depth...) must stop counting; counters are kept.
                    multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
                if code == EXIT_FATAL:
                    log.error("worker exited with a fatal error; stopping")
                    self._stopping = True
                    self._drain()
                    return EXIT_FATAL
                delay = self._backoff.next_delay()
                log.error(
                    "worker %s exited with code %s; restarting in %.1fs", proc.pid, code, delay
                )
                time.sleep(delay)
                if not self._stopping:
                    self._workers[i] = self._spawn()
        return self._drain()

    def _drain(self) -> int:
        deadline = (
            time.monotonic() + self.settings.shutdown_grace_seconds + KILL_AFTER_GRACE_SECONDS
        )
        for proc in self._workers:
            if proc.is_alive() and proc.pid is not None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        code = EXIT_OK
        for proc in self._workers:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("worker %s did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join()
                code = 1
            elif proc.exitcode not in (EXIT_OK, -signal.SIGTERM) and code == EXIT_OK:
                code = proc.exitcode or 1
        return code
