"""Exit codes of every modgate process and command; the supervisor and scripts read them."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0  # done, or drained after SIGTERM
# A dependency failed (e.g. Postgres unreachable): trying again later may help.
EXIT_DEPENDENCY: Final = 1
# Bad usage, configuration or manifest, or a port in use: restarting will not help, so the
# supervisor stops instead of restarting the worker.
EXIT_FATAL: Final = 2
