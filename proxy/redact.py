"""Secrets out of what is shown: a URL's password never reaches a log line, a repr or an error.

Imports nothing of modgate's, so every package may use it.
"""

from __future__ import annotations

import re

# user:password@ in the authority, and ?password= in the query (redis-py reads both).
_URL_PASSWORD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#]*@")
_QUERY_PASSWORD_RE = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def mask_url(value: str) -> str:
    """Replace the password in a URL with ***: postgresql://user:***@host/db."""
    return _QUERY_PASSWORD_RE.sub(r"\1***", _URL_PASSWORD_RE.sub(r"\1:***@", value, count=1))
