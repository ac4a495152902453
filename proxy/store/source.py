"""What the gateway needs from a route store: start, stop, reload on demand."""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    """Keeps a RouteRegistry filled from somewhere (a YAML file or Postgres)."""

    name: str

    async def start(self) -> None:
        """Begin loading; may raise ConfigError when the first load is impossible by design."""

    async def stop(self) -> None: ...

    def request_reload(self) -> None:
        """Reload everything soon (SIGHUP)."""
