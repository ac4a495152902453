"""The seed's response shapes, written around the JSON Postgres rendered (never parsed and
dumped again here): list `{"data": [...], "pagination": {page, limit, total, totalPages,
next_cursor}}`, read/update `{"data": {...}}`, create the same with 201, delete
`{"success": true}`."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_DELETED = b'{"success":true}'


@dataclass(frozen=True, slots=True)
class Answer:
    """An entity call's HTTP answer: the pool sends it as it is (application/json)."""

    status: int
    body: bytes


def one(row_json: str, *, status: int = 200) -> Answer:
    return Answer(status, b'{"data":' + row_json.encode() + b"}")


def page(rows_json: str, *, page: int, limit: int, total: int, next_cursor: str | None) -> Answer:
    pagination = {
        "page": page,
        "limit": limit,
        "total": total,
        "totalPages": -(-total // limit),
        "next_cursor": next_cursor,
    }
    body = b'{"data":' + rows_json.encode() + b',"pagination":' + orjson.dumps(pagination) + b"}"
    return Answer(200, body)


def deleted() -> Answer:
    return Answer(200, _DELETED)
