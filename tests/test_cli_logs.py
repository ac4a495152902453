"""`modgate logs prune` as a user runs it: the real console script against a real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.support.process import run_cli

MODULE = "0b6f2a59-3c1e-4d4e-9a55-6f1f2c3b4d01"


async def seed(dsn: str, *ages: timedelta) -> None:
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO module_api_logs (module_id, method, path, created_at) "
            "VALUES ($1, 'GET', '/x', $2)",
            [(MODULE, now - age) for age in ages],
        )
    finally:
        await conn.close()


async def ages_left(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(day FROM NOW() - created_at)::int FROM module_api_logs ORDER BY 1"
        )
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def prune(database: str, cwd: Path, *args: str) -> tuple[int, str]:
    # cwd: an empty folder, so the repository's config/gateway.yaml plays no part.
    env = {"MODGATE_DATABASE_URL": database}
    return await run_cli("logs", "prune", *args, env=env, cwd=str(cwd))


async def test_prune_deletes_old_rows_and_prints_the_count(database: str, tmp_path: Path) -> None:
    await seed(database, *[timedelta(days=d) for d in (1, 29, 31, 45, 400)])
    code, out = await prune(database, tmp_path, "--older-than", "30d")
    assert (code, out) == (0, "deleted 3 request log rows older than 30d\n")
    assert await ages_left(database) == [1, 29]

    code, out = await prune(database, tmp_path, "--older-than", "36h")
    assert (code, out) == (0, "deleted 1 request log rows older than 36h\n")
    assert await ages_left(database) == [1]


async def test_prune_defaults_to_log_retention_days(database: str, tmp_path: Path) -> None:
    await seed(database, timedelta(days=3), timedelta(days=10))
    config = tmp_path / "gateway.yaml"
    config.write_text("log_retention_days: 7\n")
    code, out = await prune(database, tmp_path, "--config", str(config))
    assert (code, out) == (0, "deleted 1 request log rows older than 7d\n")
    assert await ages_left(database) == [3]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30", "expected a whole number and a unit: 30d, 12h, 90m or 3600s, got '30'"),
        ("5x", "expected a whole number and a unit: 30d, 12h, 90m or 3600s, got '5x'"),
        ("-3d", "expected a whole number and a unit: 30d, 12h, 90m or 3600s, got '-3d'"),
        ("1.5h", "expected a whole number and a unit: 30d, 12h, 90m or 3600s, got '1.5h'"),
        ("0d", "must be more than 0 (0 would delete every row), got '0d'"),
        ("36501d", "at most 36500d, got '36501d'"),
    ],
)
async def test_bad_duration_exits_2_with_one_line(
    database: str, tmp_path: Path, value: str, message: str
) -> None:
    await seed(database, timedelta(days=90))
    code, out = await prune(database, tmp_path, f"--older-than={value}")
    assert (code, out) == (2, f"modgate: error: --older-than: {message}\n")
    assert await ages_left(database) == [90]


async def test_without_an_age_or_retention_exits_2(database: str, tmp_path: Path) -> None:
    code, out = await prune(database, tmp_path)
    assert code == 2
    assert out == (
        "modgate: error: --older-than: required (log_retention_days is 0, which keeps every row)\n"
    )


async def test_no_database_exits_2(tmp_path: Path) -> None:
    code, out = await run_cli(
        "logs", "prune", "--older-than", "30d", env={"MODGATE_DATABASE_URL": ""}, cwd=str(tmp_path)
    )
    assert code == 2
    assert out.startswith("modgate: error: database_url: required for this command"), out
    assert out.count("\n") == 1


async def test_unreachable_database_exits_1(tmp_path: Path) -> None:
    from tests.support.process import free_port

    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/nowhere"
    code, out = await run_cli(
        "logs", "prune", "--older-than", "30d", "--database-url", url, cwd=str(tmp_path)
    )
    assert code == 1, out
    assert out.startswith("modgate: error: cannot connect to Postgres"), out
    assert "s3cret" not in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("logs", "--help"), "prune"),
        (("logs", "prune", "--help"), "30d, 12h, 90m or 3600s"),
        (("logs", "prune", "--help"), "in batches of 10,000 rows"),
        (("logs", "prune", "--help"), "default: log_retention_days"),
        (("--help",), "maintain the request log"),
    ],
)
async def test_help(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    code, out = await run_cli(*args, cwd=str(tmp_path))
    assert code == 0, out
    assert expected in " ".join(out.split()), out
