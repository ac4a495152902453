"""modgate: API gateway and sidecar reverse proxy for a multi-tenant module platform."""

from __future__ import annotations

__version__ = "0.1.0"
