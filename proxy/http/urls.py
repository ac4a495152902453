"""What a URL's scheme implies, for every package that reads URLs: the gateway's upstream pool
(`upstream/pool.py`) and the key fields' origins (`auth/key_fields.py`) drop a port that is
the scheme's default, so both must agree on which ports those are."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

DEFAULT_PORTS: Final[Mapping[str, int]] = MappingProxyType({"http": 80, "https": 443})
