"""Entity calls on the handler pool side: a generated REST route's call (an `EntityConfig`, an
operation, the caller's site, the id, the query's pairs, the body) becomes one SQL statement
through `ctx.db`'s data layer (executor/data_access.py) and an answer in the seed's shapes.

    schema.py      the pool's view of one entity: its physical table, what is visible, writable
    values.py      a value checked against its field's type (query strings and JSON bodies)
    query.py       a list's query parameters (page, limit, sort, order, search, filters, cursor)
    cursor.py      the opaque keyset cursor of `pagination.next_cursor`
    sql.py         one parameterized statement per operation, `site_id = $1` in every one
    responses.py   the seed's response shapes, around JSON that Postgres rendered
    call.py        one call: parse, build, run, answer (or a GatewayError)
"""

from __future__ import annotations

from proxy.executor.entities.call import run_entity_call
from proxy.executor.entities.responses import Answer

__all__ = ["Answer", "run_entity_call"]
