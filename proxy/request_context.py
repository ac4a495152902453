"""One request's state as the pipeline learns it, read by every step after it.

The pipeline makes one `RequestContext` per request and fills it top to bottom: the module's
table and path once the module is known, the route once matched, the principal once
authenticated, the client's address once resolved. A field still None says the request never
got that far (the observer labels such a request "unknown" / "unmatched"); a step that runs
only after another may rely on what that one set.

`response_headers` are the headers every answer to the request carries, success or error
(X-Request-ID, CORS, rate-limit headers): whoever builds the response applies them.

It sits beside `errors.py`, outside every subsystem, because all of them read it (server,
upstream, executor client, observability) and it needs none of them at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.auth.client_address import IPAddress
    from proxy.auth.principal import Principal
    from proxy.routing.table import CompiledRoute, ModuleTable


class RequestContext:
    __slots__ = (
        "body", "client_ip", "module_path", "principal", "query", "request_id",
        "response_headers", "route", "started", "table",
    )  # fmt: skip

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self.started = started  # time.perf_counter() when the request reached the gateway
        self.response_headers = {"X-Request-ID": request_id}
        self.table: ModuleTable | None = None
        self.module_path = ""  # normalised, after /api/modules/{id}
        self.query = ""
        self.route: CompiledRoute | None = None
        self.principal: Principal | None = None
        self.client_ip: IPAddress | None = None
        # The request body, when a step had to read it whole (a signed request's digest):
        # what is sent on instead of the request's stream, which is then spent.
        self.body: bytes | None = None

    def __repr__(self) -> str:
        module = self.table.id if self.table is not None else None
        return f"<RequestContext {self.request_id} module={module} path={self.module_path!r}>"
