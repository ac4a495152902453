"""proxy.store.keys against a real Postgres: create, look up, list, revoke, update, usage."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from proxy.auth.api_keys import is_well_formed
from proxy.auth.key_fields import INT4_MAX, InvalidKeyField
from proxy.errors import ConfigError, StoreError
from proxy.store.keys import (
    KeySummary,
    create_key,
    fetch_active_key,
    get_key,
    list_keys,
    load_active_key_hashes,
    record_usage,
    revoke_key,
    update_key,
)

CHANNEL = "modgate_invalidate"

CRM = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d01"
BOOKING = "7c1d0e22-9f0a-4b7e-8e61-2a3b4c5d6e02"
SITE = "5e0c1b2a-0000-4000-8000-00000000a001"
OTHER_SITE = "5e0c1b2a-0000-4000-8000-00000000a002"
AGENCY = "a9e0c1b2-0000-4000-8000-00000000b001"
USER = "c0ffee00-0000-4000-8000-00000000c001"


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


async def new_key(conn: asyncpg.Connection, name: str = "integration", **fields: object):
    values: dict[str, object] = {"module_id": CRM, "site_id": SITE, "agency_id": AGENCY}
    values.update(fields)
    return await create_key(conn, name=name, **values)  # type: ignore[arg-type]


class Notifications:
    """Collects modgate_invalidate payloads on a connection of its own."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.received: asyncio.Queue[str] = asyncio.Queue()

    async def __aenter__(self) -> Notifications:
        self.listening = await asyncpg.connect(self.database)
        await self.listening.add_listener(CHANNEL, self._on)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listening.close()

    def _on(self, *args: object) -> None:
        self.received.put_nowait(str(args[3]))

    async def drain(self, conn: asyncpg.Connection) -> list[str]:
        """Everything sent so far: delivery follows commit order, so a marker sent now arrives
        after anything earlier statements caused."""
        await conn.execute("SELECT pg_notify($1, 'mark')", CHANNEL)
        payloads = []
        while (payload := await asyncio.wait_for(self.received.get(), 5)) != "mark":
            payloads.append(payload)
        return payloads


# -- create and look up ---------------------------------------------------------------------


async def test_create_stores_prefix_and_hash_never_the_key(conn: asyncpg.Connection) -> None:
    record, key = await new_key(conn, scopes=["read:contacts"], created_by=USER)
    assert is_well_formed(key)
    row = await conn.fetchrow("SELECT * FROM module_api_keys WHERE id = $1", record.id)
    assert row["key_prefix"] == key[:12] == record.key_prefix
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest() == record.key_hash
    assert key not in {str(value) for value in row.values()}
    assert (str(row["created_by"]), row["name"], row["scopes"]) == (
        USER,
        "integration",
        ["read:contacts"],
    )
    assert (record.rate_limit_per_minute, record.rate_limit_per_day) == (60, 10000)
    assert record.is_active and record.expires_at is None and record.revoked_at is None


async def test_default_is_no_scopes_not_star(conn: asyncpg.Connection) -> None:
    record, _ = await new_key(conn)
    assert record.scopes == ()
    assert await conn.fetchval("SELECT scopes FROM module_api_keys") == []


async def test_create_normalizes_lists_and_sets_expiry(conn: asyncpg.Connection) -> None:
    before = datetime.now(UTC)
    record, _ = await new_key(
        conn,
        name="  padded  ",
        scopes=["a", "b", "a"],
        expires_in_days=30,
        rate_limit_per_minute=5,
        rate_limit_per_day=None,
        allowed_ips=["10.1.2.3/8", "2001:DB8::0001", "192.0.2.7", "10.0.0.0/8"],
        allowed_origins=["HTTPS://App.Example.com:443", "http://localhost:3000", "*"],
    )
    assert record.name == "padded"
    assert record.scopes == ("a", "b")
    assert record.allowed_ips == ("10.0.0.0/8", "2001:db8::1", "192.0.2.7")
    assert record.allowed_origins == ("https://app.example.com", "http://localhost:3000", "*")
    assert (record.rate_limit_per_minute, record.rate_limit_per_day) == (5, None)
    assert record.expires_at is not None and record.expires_at.tzinfo is not None
    assert timedelta(days=30) - timedelta(minutes=1) < record.expires_at - before
    assert record.expires_at - before < timedelta(days=30, minutes=1)


async def test_fetch_active_key_by_hash(conn: asyncpg.Connection) -> None:
    record, key = await new_key(conn, scopes=["x"], allowed_ips=["10.0.0.0/8"])
    found = await fetch_active_key(conn, hashlib.sha256(key.encode()).hexdigest())
    assert found == record
    assert found is not None and found.id == str(uuid.UUID(found.id))  # canonical text
    assert await fetch_active_key(conn, "0" * 64) is None


async def test_fetch_returns_expired_and_flagged_rows_while_active(
    conn: asyncpg.Connection,
) -> None:
    # The caller judges expiry and revocation per request; only is_active filters here.
    record, _ = await new_key(conn)
    await conn.execute(
        "UPDATE module_api_keys SET expires_at = NOW() - INTERVAL '1 day', revoked_at = NOW()"
    )
    found = await fetch_active_key(conn, record.key_hash)
    assert found is not None and found.expires_at is not None and found.revoked_at is not None


async def test_fetch_returns_the_newest_of_duplicate_hashes(conn: asyncpg.Connection) -> None:
    record, _ = await new_key(conn, name="old")
    newer = await conn.fetchval(
        "INSERT INTO module_api_keys (module_id, site_id, agency_id, key_prefix, key_hash, name,"
        " created_at) VALUES ($1, $2, $3, $4, $5, 'new', NOW() + INTERVAL '1 second')"
        " RETURNING id::text",
        CRM,
        SITE,
        AGENCY,
        record.key_prefix,
        record.key_hash,
    )
    found = await fetch_active_key(conn, record.key_hash)
    assert found is not None and (found.id, found.name) == (newer, "new")


async def test_revoked_key_is_not_fetched_nor_loaded(conn: asyncpg.Connection) -> None:
    revoked, _ = await new_key(conn, name="revoked")
    inactive, _ = await new_key(conn, name="inactive")
    flagged, _ = await new_key(conn, name="flagged")
    kept, _ = await new_key(conn, name="kept")
    assert await revoke_key(conn, revoked.id, revoked_by=USER)
    await conn.execute("UPDATE module_api_keys SET is_active = false WHERE id = $1", inactive.id)
    await conn.execute("UPDATE module_api_keys SET revoked_at = NOW() WHERE id = $1", flagged.id)

    row = await conn.fetchrow("SELECT * FROM module_api_keys WHERE id = $1", revoked.id)
    assert row["is_active"] is False and row["revoked_at"] is not None
    assert str(row["revoked_by"]) == USER
    assert await fetch_active_key(conn, revoked.key_hash) is None
    assert await fetch_active_key(conn, inactive.key_hash) is None
    assert sorted(await load_active_key_hashes(conn)) == [kept.key_hash]


async def test_load_active_key_hashes_many(conn: asyncpg.Connection) -> None:
    assert await load_active_key_hashes(conn) == []
    await conn.execute(
        "INSERT INTO module_api_keys (module_id, site_id, agency_id, key_prefix, key_hash, name)"
        " SELECT $1, $2, $3, 'dmc_live_000', md5(i::text), 'k' FROM generate_series(1, 20000) i",
        CRM,
        SITE,
        AGENCY,
    )
    hashes = await load_active_key_hashes(conn)
    assert len(hashes) == 20000 and len(set(hashes)) == 20000


# -- list -----------------------------------------------------------------------------------


async def test_list_is_newest_first_and_never_has_the_hash(conn: asyncpg.Connection) -> None:
    first, _ = await new_key(conn, name="first")
    second, _ = await new_key(conn, name="second", site_id=OTHER_SITE)
    third, _ = await new_key(conn, name="third", module_id=BOOKING)
    await conn.execute(
        "UPDATE module_api_keys SET created_at = created_at - (INTERVAL '1 hour' * $2::int) "
        "WHERE id = $1",
        first.id,
        3,
    )
    await conn.execute(
        "UPDATE module_api_keys SET created_at = created_at - INTERVAL '1 hour' WHERE id = $1",
        second.id,
    )
    listed = await list_keys(conn)
    assert [k.name for k in listed] == ["third", "second", "first"]
    assert "key_hash" not in KeySummary.__dataclass_fields__
    for summary in listed:
        assert not {first.key_hash, second.key_hash, third.key_hash} & set(
            map(str, vars_of(summary))
        )
    assert [k.name for k in await list_keys(conn, module_id=CRM)] == ["second", "first"]
    assert [k.name for k in await list_keys(conn, module_id=CRM, site_id=SITE)] == ["first"]
    assert [k.name for k in await list_keys(conn, site_id=OTHER_SITE)] == ["second"]


def vars_of(summary: KeySummary) -> list[object]:
    return [getattr(summary, name) for name in KeySummary.__dataclass_fields__]


async def test_list_hides_revoked_unless_asked(conn: asyncpg.Connection) -> None:
    revoked, _ = await new_key(conn, name="revoked")
    await new_key(conn, name="active")
    await revoke_key(conn, revoked.id)
    assert [k.name for k in await list_keys(conn)] == ["active"]
    both = {k.name: k for k in await list_keys(conn, include_revoked=True)}
    now = datetime.now(UTC)
    assert both["revoked"].status(now) == "revoked" and both["active"].status(now) == "active"
    assert both["active"].request_count == 0 and both["active"].last_used_at is None


def test_status_order() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    base = KeySummary(
        id=CRM,
        key_prefix="dmc_live_abc",
        name="k",
        module_id=CRM,
        site_id=SITE,
        agency_id=AGENCY,
        scopes=(),
        rate_limit_per_minute=60,
        rate_limit_per_day=10000,
        allowed_ips=(),
        allowed_origins=(),
        is_active=True,
        revoked_at=None,
        expires_at=None,
        last_used_at=None,
        request_count=0,
        created_at=now,
    )
    assert base.status(now) == "active"
    assert replace(base, expires_at=now + timedelta(seconds=1)).status(now) == "active"
    assert replace(base, expires_at=now).status(now) == "expired"
    assert replace(base, is_active=False, expires_at=now).status(now) == "inactive"
    assert replace(base, is_active=False, revoked_at=now).status(now) == "revoked"


# -- revoke and update ----------------------------------------------------------------------


async def test_revoke_twice_or_unknown_is_false_and_untouched(conn: asyncpg.Connection) -> None:
    record, _ = await new_key(conn)
    assert await revoke_key(conn, record.id, revoked_by=USER) is True
    before = await conn.fetchrow("SELECT * FROM module_api_keys")
    assert await revoke_key(conn, record.id) is False
    assert await conn.fetchrow("SELECT * FROM module_api_keys") == before
    assert await revoke_key(conn, CRM) is False


async def test_update_changes_only_given_fields(conn: asyncpg.Connection) -> None:
    record, _ = await new_key(
        conn,
        scopes=["read"],
        allowed_ips=["10.0.0.0/8"],
        allowed_origins=["https://a.example"],
        expires_in_days=5,
    )
    before = dict(await conn.fetchrow("SELECT * FROM module_api_keys"))

    updated = await update_key(conn, record.id, name="renamed", rate_limit_per_day=50)
    assert updated is not None
    after = dict(await conn.fetchrow("SELECT * FROM module_api_keys"))
    assert {k for k in before if before[k] != after[k]} == {"name", "rate_limit_per_day"}
    assert (updated.name, updated.rate_limit_per_day, updated.scopes) == ("renamed", 50, ("read",))

    updated = await update_key(conn, record.id, scopes=[], allowed_ips=[], expires_at=None)
    assert updated is not None
    assert (updated.scopes, updated.allowed_ips, updated.expires_at) == ((), (), None)
    assert updated.allowed_origins == ("https://a.example",)

    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    updated = await update_key(conn, record.id, expires_at=when, allowed_origins=["*"])
    assert updated is not None and (updated.expires_at, updated.allowed_origins) == (when, ("*",))
    assert await update_key(conn, CRM, name="nobody") is None


async def test_update_of_a_revoked_key_keeps_it_revoked(conn: asyncpg.Connection) -> None:
    record, _ = await new_key(conn)
    await revoke_key(conn, record.id)
    updated = await update_key(conn, record.id, name="still revoked")
    assert updated is not None and not updated.is_active and updated.revoked_at is not None
    summary = await get_key(conn, record.id)
    assert summary is not None and summary.name == "still revoked"


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"module_id": "crm"}, "module_id: 'crm' is not a UUID"),
        ({"agency_id": ""}, "agency_id: '' is not a UUID"),
        ({"created_by": "me"}, "created_by: 'me' is not a UUID"),
        ({"name": "   "}, "name: must not be empty"),
        (
            {"scopes": ["read all"]},
            "scopes: 'read all' is not a scope (no spaces or control characters, not empty)",
        ),
        ({"scopes": "read"}, "scopes: expected a list of strings, got a single string"),
        (
            {"allowed_ips": ["10.0.0.0/33"]},
            "allowed_ips: '10.0.0.0/33' is not an IP address or CIDR network",
        ),
        (
            {"allowed_ips": ["10.0.0.300"]},
            "allowed_ips: '10.0.0.300' is not an IP address or CIDR network",
        ),
        (
            {"allowed_origins": ["https://a.example/app"]},
            "allowed_origins: 'https://a.example/app' is not an origin: expected '*' or "
            "scheme://host[:port] without a path",
        ),
        (
            {"allowed_origins": ["a.example"]},
            "allowed_origins: 'a.example' is not an origin: expected '*' or "
            "scheme://host[:port] without a path",
        ),
        (
            {"rate_limit_per_minute": 0},
            f"rate_limit_per_minute: expected a whole number from 1 to {INT4_MAX}, got 0",
        ),
        (
            {"rate_limit_per_day": True},
            f"rate_limit_per_day: expected a whole number from 1 to {INT4_MAX}, got True",
        ),
        (
            {"expires_in_days": -1},
            "expires_in_days: expected a whole number from 1 to 36500, got -1",
        ),
    ],
)
async def test_bad_values_are_refused_before_writing(
    conn: asyncpg.Connection, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidKeyField) as caught:
        await new_key(conn, **fields)
    assert str(caught.value) == message
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)
    assert await conn.fetchval("SELECT count(*) FROM module_api_keys") == 0


async def test_update_validates_like_create(conn: asyncpg.Connection) -> None:
    record, _ = await new_key(conn)
    with pytest.raises(InvalidKeyField, match=r"^allowed_ips: 'fe80::/129' is not"):
        await update_key(conn, record.id, allowed_ips=["fe80::/129"])
    with pytest.raises(InvalidKeyField, match=r"^expires_at: expected an aware datetime"):
        await update_key(conn, record.id, expires_at=datetime(2030, 1, 1))
    with pytest.raises(InvalidKeyField, match=r"^key_id: 'k1' is not a UUID$"):
        await update_key(conn, "k1", name="x")
    with pytest.raises(InvalidKeyField, match=r"^key_id: 'k1' is not a UUID$"):
        await revoke_key(conn, "k1")


async def test_closed_connection_is_a_store_error(database: str) -> None:
    closed = await asyncpg.connect(database)
    await closed.close()
    with pytest.raises(StoreError, match=r"^cannot list API keys: "):
        await list_keys(closed)
    with pytest.raises(StoreError, match=r"^cannot look up an API key: "):
        await fetch_active_key(closed, "0" * 64)


# -- usage and notifications ----------------------------------------------------------------


async def count_update_statements(conn: asyncpg.Connection) -> None:
    """Log every UPDATE statement on module_api_keys into usage_statements (this test's DB)."""
    await conn.execute(
        """
        CREATE TABLE usage_statements (n serial);
        CREATE FUNCTION log_usage_statement() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO usage_statements DEFAULT VALUES; RETURN NULL; END $$;
        CREATE TRIGGER log_usage_statement AFTER UPDATE ON module_api_keys
          FOR EACH STATEMENT EXECUTE FUNCTION log_usage_statement();
        """
    )


async def test_record_usage_adds_counts_keeps_latest_use_in_one_statement_without_notify(
    conn: asyncpg.Connection, database: str
) -> None:
    keys = [(await new_key(conn, name=f"k{i}"))[0] for i in range(50)]
    t0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    await conn.execute("UPDATE module_api_keys SET request_count = 5, last_used_at = $1", t0)
    await conn.execute(
        "UPDATE module_api_keys SET request_count = NULL, last_used_at = NULL WHERE id = $1",
        keys[1].id,
    )
    await count_update_statements(conn)
    usage = {k.id: (i + 1, t0 + timedelta(seconds=i - 25)) for i, k in enumerate(keys)}
    usage[keys[0].id.upper()] = (1000, t0 + timedelta(hours=1))  # same key, other spelling
    usage["not-a-uuid"] = (1, t0)  # cannot exist; must not fail the batch

    async with Notifications(database) as notes:
        await record_usage(conn, usage)
        assert await notes.drain(conn) == []

    assert await conn.fetchval("SELECT count(*) FROM usage_statements") == 1
    rows = {
        str(r["id"]): (r["request_count"], r["last_used_at"])
        for r in await conn.fetch("SELECT id, request_count, last_used_at FROM module_api_keys")
    }
    assert rows[keys[0].id] == (5 + 1 + 1000, t0 + timedelta(hours=1))
    assert rows[keys[1].id] == (2, t0 - timedelta(seconds=24))  # NULLs: from 0, from never
    for i, key in enumerate(keys[2:], start=2):
        assert rows[key.id] == (5 + i + 1, max(t0, t0 + timedelta(seconds=i - 25)))


async def test_record_usage_saturates_the_integer_counter(conn: asyncpg.Connection) -> None:
    record, _ = await new_key(conn)
    now = datetime.now(UTC)
    await conn.execute("UPDATE module_api_keys SET request_count = $1", INT4_MAX - 10)
    await record_usage(conn, {record.id: (INT4_MAX + 5, now)})
    assert await conn.fetchval("SELECT request_count FROM module_api_keys") == INT4_MAX
    await record_usage(conn, {})  # an empty batch is a no-op


async def test_writes_notify_the_key_hash(conn: asyncpg.Connection, database: str) -> None:
    async with Notifications(database) as notes:
        record, _ = await new_key(conn)
        assert await notes.drain(conn) == [f"key:{record.key_hash}"]
        await update_key(conn, record.id, scopes=["a"])
        assert await notes.drain(conn) == [f"key:{record.key_hash}"]
        await update_key(conn, record.id, scopes=["a"])  # no change, no wake-up
        assert await notes.drain(conn) == []
        await revoke_key(conn, record.id)
        assert await notes.drain(conn) == [f"key:{record.key_hash}"]
    assert re.fullmatch(r"[0-9a-f]{64}", record.key_hash)
