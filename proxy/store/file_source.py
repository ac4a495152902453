"""The embedded default's store: routes and API keys from the manifest on disk, watched.

The file is checked every `poll_seconds` (stat: mtime, size, inode; following symlinks, so a
Kubernetes ConfigMap's atomic symlink swap counts as a change) and on SIGHUP. A bad file at
start is fatal (there is nothing to serve); a bad file later is logged and the last good
tables keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from proxy.auth.key_directory import KeyDirectory
from proxy.auth.manifest_keys import records_from_manifest
from proxy.errors import ConfigError
from proxy.observability import metrics
from proxy.routing.manifest import Manifest, load_manifest
from proxy.routing.registry import RouteRegistry
from proxy.tasks import cancel_and_wait

log = logging.getLogger("modgate.routes")


class FileSource:
    name = "file"

    def __init__(
        self,
        path: str,
        registry: RouteRegistry,
        keys: KeyDirectory | None = None,
        *,
        poll_seconds: float,
        listen: str | None = None,
    ) -> None:
        self.path = path
        self.listen = listen  # what `{listen}` in the manifest stands for (routing/manifest.py)
        self.registry = registry
        self.keys = keys
        self.poll_seconds = poll_seconds
        self.manifest: Manifest | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()

    async def start(self) -> None:
        self._stamp = self._stat()
        if self._stamp is None and not os.path.exists(self.path):
            raise ConfigError(self._not_found())
        errors = self._load()
        if errors:
            raise ConfigError(f"{self.path}: " + "; ".join(errors))
        self._task = asyncio.create_task(self._watch(), name="modgate-routes-file")

    def _not_found(self) -> str:
        # What a newcomer running `modgate serve` outside the repository meets first: say
        # which setting names the file, and where a relative path is looked for.
        where = "" if os.path.isabs(self.path) else f" (relative to {os.getcwd()})"
        return (
            f"{self.path}: file not found{where}; the routes_file setting names the routes "
            "manifest (MODGATE_ROUTES_FILE, modgate serve --routes-file), or set database_url "
            "to serve routes from Postgres"
        )

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def request_reload(self) -> None:
        self._stamp = None
        self._wakeup.set()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> list[str]:
        manifest = load_manifest(self.path, listen=self.listen)
        records = records_from_manifest(manifest.api_keys, self.path)  # all checked first
        errors = self.registry.replace_all(manifest.modules, source=self.name)
        if self.keys is not None:
            self.keys.install_all(records)
        self.manifest = manifest
        if not errors:
            metrics.ROUTE_RELOADS.labels(source=self.name, result="ok").inc()
        log.info(
            "loaded %d modules and %d API keys from %s",
            len(manifest.modules),
            len(records),
            self.path,
        )
        return errors

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.poll_seconds)
            self._wakeup.clear()
            stamp = self._stat()
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                self._load()
            except ConfigError as exc:
                metrics.ROUTE_RELOADS.labels(source=self.name, result="error").inc()
                log.error("routes file not reloaded, last good tables kept: %s", exc)
