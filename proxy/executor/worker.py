"""One executor worker process: serve /v1/execute until SIGTERM, then drain and exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from proxy.executor.service import Executor, build_executor_app
from proxy.exit_codes import EXIT_FATAL, EXIT_OK
from proxy.settings import Settings, cannot_listen

log = logging.getLogger("modgate.executor")


async def serve_executor(settings: Settings, *, reuse_port: bool = False) -> int:
    address = settings.listen_addresses.executor
    runner = web.AppRunner(
        build_executor_app(Executor(settings)),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
    try:
        await runner.setup()
        await web.TCPSite(runner, address.host, address.port, reuse_port=reuse_port).start()
    except OSError as exc:
        log.error("%s", cannot_listen(settings, "executor_listen", exc))
        await runner.cleanup()
        return EXIT_FATAL
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    log.info("modgate executor on http://%s:%d", address.host, address.port)
    await stop.wait()
    await runner.cleanup()
    return EXIT_OK


def run_executor(settings: Settings, reuse_port: bool = False) -> int:
    from proxy.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    import uvloop

    return uvloop.run(serve_executor(settings, reuse_port=reuse_port))


def executor_worker_main(settings: Settings, reuse_port: bool) -> None:
    """Entry point of an executor process started by the supervisor."""
    sys.exit(run_executor(settings, reuse_port))
