"""Resident memory of a worker's state: 100k routes compiled and 100k API keys cached.

.venv/bin/python bench/memory_bench.py
"""

from __future__ import annotations

import gc
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.auth.api_keys import ApiKeyRecord, generate_key, hash_key, key_prefix
from proxy.auth.key_directory import KeyDirectory
from proxy.routing.model import ModuleSpec, RouteSpec
from proxy.routing.registry import RouteRegistry


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    import aiohttp  # noqa: F401  (the gateway's own imports are part of a worker's baseline)

    gc.collect()
    base = rss_mib()
    modules = [
        ModuleSpec(
            id=str(uuid.uuid4()),
            name=f"m{m}",
            upstream="http://127.0.0.1:8000",
            routes=tuple(
                RouteSpec(
                    path=f"/r{r}/:id/sub{r % 7}",
                    method="GET",
                    handler_type="proxy",
                    required_scopes=("read:x",),
                )
                for r in range(1000)
            ),
        )
        for m in range(100)
    ]
    registry = RouteRegistry()
    registry.replace_all(modules, source="bench")
    del modules
    gc.collect()
    routes = rss_mib()
    keys = KeyDirectory(capacity=200_000, negative_ttl=60, lookup_budget_per_second=50)
    keys.set_index([])
    for _ in range(100_000):
        key = generate_key()
        keys.put(
            hash_key(key),
            ApiKeyRecord(
                id=str(uuid.uuid4()),
                module_id=str(uuid.uuid4()),
                site_id=str(uuid.uuid4()),
                agency_id=str(uuid.uuid4()),
                key_prefix=key_prefix(key),
                key_hash=hash_key(key),
                name="k",
                scopes=("read:*",),
                allowed_ips=("10.0.0.0/8",),
            ),
        )
    gc.collect()
    total = rss_mib()
    print(
        f"worker baseline {base:.0f} MiB; +100k routes (100 modules) {routes - base:.0f} MiB; "
        f"+100k cached keys {total - routes:.0f} MiB; total {total:.0f} MiB "
        f"(target <= 200 MiB: {'met' if total <= 200 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
