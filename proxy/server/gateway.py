"""One gateway process's state: settings, route registry, route source, upstream session."""

from __future__ import annotations

import aiohttp

from proxy.routing.registry import RouteRegistry
from proxy.settings import Settings
from proxy.store.file_source import FileRouteSource
from proxy.store.pg_source import PostgresRouteSource
from proxy.store.source import RouteSource
from proxy.upstream.client import create_session


def source_for(settings: Settings, registry: RouteRegistry) -> RouteSource:
    """Postgres when `database_url` is set, else the embedded routes file."""
    if settings.database_url:
        return PostgresRouteSource(
            settings.database_url,
            registry,
            timeout=settings.database_timeout,
            pool_size=settings.database_pool_size,
            reconnect_max_seconds=settings.database_reconnect_max_seconds,
        )
    return FileRouteSource(
        settings.routes_file, registry, poll_seconds=settings.routes_poll_seconds
    )


class Gateway:
    """Owns what lives as long as the process: opened by `start`, closed by `stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: RouteRegistry | None = None,
        source: RouteSource | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or RouteRegistry()
        self.source = source or source_for(settings, self.registry)
        self.session: aiohttp.ClientSession | None = None
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.registry.loaded and not self.draining

    async def start(self) -> None:
        self.session = create_session(self.settings)
        try:
            await self.source.start()
        except BaseException:
            await self.session.close()
            raise

    async def stop(self) -> None:
        await self.source.stop()
        if self.session is not None:
            await self.session.close()

    def __repr__(self) -> str:
        state = "draining" if self.draining else ("ready" if self.ready else "loading")
        return f"<Gateway {self.source.name} {state} {self.registry!r}>"
