"""The live set of module tables, looked up by module id or alias on every request.

Invariant: a table is only ever replaced whole (one dict assignment, atomic under asyncio),
so a request sees either the old snapshot or the new one, never a mix. A reload that fails
leaves the previous tables in place; nothing here ever empties the registry because a store
hiccuped — removal happens only when a successful load says a module is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from proxy.errors import ConfigError
from proxy.observability import metrics
from proxy.routing.model import ModuleSpec
from proxy.routing.table import ModuleTable, compile_module

log = logging.getLogger("modgate.routes")


# A sidecar whose module is missing names at most this many of the loaded ones in its log line.
_NAMED_MODULES = 20


class RouteRegistry:
    """Module id / alias -> ModuleTable; swapped atomically, versioned, ready once loaded.

    `sidecar_module`: the one module a sidecar serves (its id or name). An install without it
    is logged as an ERROR naming the modules there are (once, until it is back), and
    `sidecar_module_missing` tells /readyz: a sidecar without its module would answer 404 on
    every path."""

    __slots__ = (
        "_by_key",
        "_tables",
        "loaded",
        "sidecar_module",
        "sidecar_module_missing",
        "version",
    )

    def __init__(self, *, sidecar_module: str | None = None) -> None:
        self._tables: dict[str, ModuleTable] = {}
        self._by_key: dict[str, ModuleTable] = {}
        self.version = 0
        self.loaded = False
        self.sidecar_module = sidecar_module
        self.sidecar_module_missing = False

    def lookup(self, key: str) -> ModuleTable | None:
        return self._by_key.get(key)

    def tables(self) -> list[ModuleTable]:
        return list(self._tables.values())

    def replace_all(self, specs: Iterable[ModuleSpec], *, source: str) -> list[str]:
        """Install a full load: modules missing from it are removed. Returns compile errors.

        A module that fails to compile keeps its previous table (if any); the others update.
        """
        tables = dict(self._tables)
        errors: list[str] = []
        seen: set[str] = set()
        for spec in specs:
            seen.add(spec.id)
            table = self._compile(spec, errors, source)
            if table is not None:
                tables[spec.id] = table
        for module_id in list(tables):
            if module_id not in seen:
                del tables[module_id]
        self._install(tables)
        self.loaded = True
        return errors

    def update(
        self, specs: Iterable[ModuleSpec], removed: Iterable[str], *, source: str
    ) -> list[str]:
        """Install an incremental load of some modules; `removed` ids no longer exist."""
        tables = dict(self._tables)
        errors: list[str] = []
        for module_id in removed:
            tables.pop(module_id, None)
        for spec in specs:
            table = self._compile(spec, errors, source)
            if table is not None:
                tables[spec.id] = table
        self._install(tables)
        return errors

    def _compile(self, spec: ModuleSpec, errors: list[str], source: str) -> ModuleTable | None:
        try:
            table = compile_module(spec, self.version + 1)
        except ConfigError as exc:
            errors.append(str(exc))
            metrics.ROUTE_RELOADS.labels(source=source, result="compile_error").inc()
            log.error("route table for module %s not updated: %s", spec.id, exc)
            return None
        return table

    def _install(self, tables: dict[str, ModuleTable]) -> None:
        by_key: dict[str, ModuleTable] = {}
        for table in tables.values():
            by_key[table.id] = table
        for table in tables.values():
            # An alias never shadows a module id; a duplicate alias goes to the first module.
            if table.name and table.name not in by_key:
                by_key[table.name] = table
        self.version += 1
        self._tables = tables
        self._by_key = by_key
        metrics.ROUTE_MODULES.set(len(tables))
        metrics.ROUTE_ROUTES.set(sum(len(t) for t in tables.values()))
        metrics.ROUTE_TABLE_VERSION.set(self.version)
        metrics.ROUTE_LAST_RELOAD.set(time.time())
        if self.sidecar_module is not None:
            self._check_sidecar_module(self.sidecar_module)

    def _check_sidecar_module(self, wanted: str) -> None:
        missing = wanted not in self._by_key
        if missing and not self.sidecar_module_missing:
            tables = sorted(self._tables.values(), key=lambda t: t.name or t.id)
            names = [f"{t.name} ({t.id})" if t.name else t.id for t in tables[:_NAMED_MODULES]]
            if len(tables) > _NAMED_MODULES:
                names.append(f"and {len(tables) - _NAMED_MODULES} more")
            log.error(
                "sidecar_module '%s' is not among the loaded modules, so this sidecar is not "
                "ready (every path would answer 404); loaded: %s",
                wanted,
                ", ".join(names) or "none",
            )
        elif not missing and self.sidecar_module_missing:
            log.info("sidecar_module '%s' is loaded", wanted)
        self.sidecar_module_missing = missing

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "empty"
        return f"<RouteRegistry v{self.version} {state} modules={len(self._tables)}>"
