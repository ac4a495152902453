"""X-Request-ID: the client's is kept when it is sane, otherwise one is made."""

from __future__ import annotations

import os
import re

# Printable, header- and log-safe, bounded: anything else could smuggle text into logs.
_SANE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_for(incoming: str | None) -> str:
    if incoming is not None and _SANE.fullmatch(incoming):
        return incoming
    return os.urandom(16).hex()
