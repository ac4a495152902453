"""One gateway worker process: serve both ports until SIGTERM, then drain and exit 0.

Drain: on SIGTERM/SIGINT the worker reports not-ready, stops accepting new connections,
lets in-flight requests finish for up to `shutdown_grace_seconds`, then closes what is left.
The request log and key usage are written within the same grace (at least 1 s of it is left for
them, proxy/server/gateway.py); what they cannot write by then is counted as dropped.
SIGHUP reloads the route tables.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from proxy.errors import ConfigError
from proxy.exit_codes import EXIT_FATAL, EXIT_OK
from proxy.server.app import build_admin_app, build_public_server, public_pipeline
from proxy.server.gateway import Gateway
from proxy.server.protocol import ClientLimits
from proxy.settings import Settings, cannot_listen

log = logging.getLogger("modgate.server")

# How long a worker beside others waits to be ready before it listens on the public port.
STARTUP_WAIT_SECONDS = 30.0


async def serve(settings: Settings, *, reuse_port: bool = False) -> int:
    try:
        gateway = Gateway(settings)  # a JWT public key that cannot be used is refused here
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_FATAL
    listen = settings.listen_addresses
    public = web.ServerRunner(
        build_public_server(public_pipeline(gateway), ClientLimits.from_settings(settings)),
        handle_signals=False,
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
    admin = web.AppRunner(
        build_admin_app(gateway), handle_signals=False, access_log=None, shutdown_timeout=1.0
    )
    binding = ""  # the setting whose address is being bound, for the error
    try:
        await gateway.start()
        await public.setup()
        await admin.setup()
        binding = "admin_listen"
        await web.TCPSite(
            admin, listen.admin.host, listen.admin.port, reuse_port=reuse_port
        ).start()
        binding = ""
        if reuse_port:
            await _until_ready(gateway, STARTUP_WAIT_SECONDS)
        binding = "listen"
        await web.TCPSite(
            public, listen.public.host, listen.public.port, reuse_port=reuse_port, backlog=1024
        ).start()
    except ConfigError as exc:
        log.error("%s", exc)
        await _cleanup(gateway, public, admin)
        return EXIT_FATAL
    except OSError as exc:
        log.error(
            "%s", cannot_listen(settings, binding, exc) if binding else f"cannot start: {exc}"
        )
        await _cleanup(gateway, public, admin)
        return EXIT_FATAL

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.source.request_reload)
    log.info(
        "modgate serving on http://%s:%d (admin http://%s:%d), routes from %s, mode %s",
        listen.public.host,
        _bound_port(public) or listen.public.port,
        listen.admin.host,
        _bound_port(admin) or listen.admin.port,
        gateway.source.name,
        settings.mode,
    )
    await stop.wait()
    gateway.draining = True
    # One grace for both: in-flight requests first, then the rows and counts they left queued.
    deadline = loop.time() + settings.shutdown_grace_seconds
    log.info("draining in-flight requests (up to %.1fs)", settings.shutdown_grace_seconds)
    await _cleanup(gateway, public, admin, deadline)
    log.info("stopped")
    return EXIT_OK


async def _until_ready(gateway: Gateway, timeout: float) -> None:
    """Wait (up to `timeout`) until the gateway could serve. Beside other workers on the same
    port (SO_REUSEPORT) the kernel hands a worker connections as soon as it listens, so one
    restarted after a crash would answer its share of requests 503 until its tables load;
    alone, a worker listens at once and /readyz keeps traffic away instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (reason := gateway.not_ready_reason()) is not None:
        if loop.time() >= deadline:
            log.warning("listening although not ready after %.0fs: %s", timeout, reason)
            return
        await asyncio.sleep(0.05)


async def _cleanup(
    gateway: Gateway,
    public: web.ServerRunner,
    admin: web.AppRunner,
    deadline: float | None = None,
) -> None:
    # Public first: it stops listening and waits for in-flight requests; then the gateway's
    # resources close (the request log and key usage written by `deadline`); the admin port
    # answers /readyz (503 draining) meanwhile.
    await public.cleanup()
    await gateway.stop(deadline)
    await admin.cleanup()


def _bound_port(runner: web.BaseRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return None


def run_worker(settings: Settings, reuse_port: bool = False) -> int:
    """Run one worker to completion on uvloop; returns the process exit code."""
    from proxy.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(serve(settings, reuse_port=reuse_port))
    return uvloop.run(serve(settings, reuse_port=reuse_port))


def worker_main(settings: Settings, reuse_port: bool) -> None:
    """Entry point of a child process started by the supervisor."""
    sys.exit(run_worker(settings, reuse_port))
