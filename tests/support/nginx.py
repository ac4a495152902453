"""A real nginx (Debian's nginx-light) serving static files: the normalising upstream.

nginx decodes %XX (%2F and %5C included), merges slashes and resolves dot segments before it
maps a path to a file, as most upstream servers and frameworks do. Put behind the gateway, it
turns any path the gateway forwards un-normalised into a different resource than the one whose
route was authorised: exactly the issue's bypass.

Each `Nginx` is its own process on a free port with its own prefix, config and logs under a
temporary folder (`master_process off`: one process, the test's user, no pid file elsewhere);
the system's nginx is never touched. `make tools` installs the package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.support.polling import eventually_sync
from tests.support.process import free_port

NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")

_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    default_type text/plain;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/html;
    }}
}}
"""


def nginx_binary() -> str:
    """The nginx executable; AssertionError naming the package when there is none."""
    found = shutil.which("nginx") or next((p for p in NGINX_PATHS if Path(p).exists()), None)
    assert found, "nginx is needed by tests/edge: `make tools` (apt-get install nginx-light)"
    return found


class Nginx:
    """nginx on a free port serving `files` (path -> content) from its own root."""

    def __init__(self, prefix: Path, files: Mapping[str, bytes]) -> None:
        self.prefix = prefix
        self.port = free_port()
        for path, content in files.items():
            target = prefix / "html" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.config = prefix / "nginx.conf"
        self.config.write_text(_CONFIG.format(prefix=prefix, port=self.port))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Nginx:
        # -e: the error log from the first line on (the default path is the system's).
        args = [nginx_binary(), "-p", str(self.prefix), "-c", str(self.config)]
        args += ["-e", str(self.prefix / "error.log")]
        with (self.prefix / "stderr.log").open("wb") as stderr:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
        proc = self.proc

        def listens() -> bool:
            if proc.poll() is not None:
                err = (self.prefix / "stderr.log").read_text(errors="replace")
                raise AssertionError(f"nginx exited {proc.returncode}: {err}")
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True

        try:
            eventually_sync(
                listens,
                timeout=timeout,
                interval=0.02,
                what=f"nginx listens on {self.port}",
                ignore=(OSError,),  # not listening yet
            )
        except AssertionError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # fast shutdown
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
