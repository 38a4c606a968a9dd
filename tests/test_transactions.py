"""SERIALIZABLE transactions with automatic retry, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import AppFiles, LiveServer

COUNTERS = """
from runtime import mutation, query

@mutation
async def increment(ctx, name: str):
    row = await ctx.db.query("counters").with_index("by_name", name=name).first()
    if row is None:
        await ctx.db.insert("counters", {"name": name, "value": 1})
        return 1
    await ctx.db.patch("counters", row["_id"], {"value": row["value"] + 1})
    return row["value"] + 1

@query
async def read(ctx, name: str):
    row = await ctx.db.query("counters").with_index("by_name", name=name).first()
    return row["value"] if row else 0

@mutation(key="name")
async def always_conflicts(ctx, name: str):
    await ctx.sql("DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END $$")

@mutation
async def swallows_error(ctx, name: str):
    await ctx.db.insert("counters", {"name": name, "value": 1})
    try:
        await ctx.sql("SELECT 1 / 0")
    except Exception:
        pass  # the transaction is aborted now: nothing above may be reported as committed
    return "ok"
"""

SCHEMA: dict[str, Any] = {
    "tables": {
        "counters": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "value": {"type": "integer"}},
            "required": ["name", "value"],
            "indexes": {"by_name": ["name"]},
        }
    },
    "functions": {
        name: {
            "args": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            }
        }
        for name in (
            "counters.increment",
            "counters.read",
            "counters.always_conflicts",
            "counters.swallows_error",
        )
    },
}


@pytest.fixture
def counters_app(app_files: AppFiles) -> AppFiles:
    app_files.write_module("counters", COUNTERS)
    app_files.write_schema(SCHEMA)
    return app_files


def test_concurrent_increments_lose_no_update(
    counters_app: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> None:
    """50 concurrent clients x 20 increments of one counter end at exactly 1000."""
    server = serve(counters_app, dev=True, pool_max=16)
    headers = {"authorization": f"Bearer {dev_token}"}

    async def client_loop(client: httpx.AsyncClient) -> list[int]:
        attempts = []
        for _ in range(20):
            r = await client.post("/fn/counters.increment", json={"name": "c"})
            assert r.status_code == 200, r.text
            attempts.append(int(r.headers["x-runtime-attempts"]))
        return attempts

    async def main() -> list[int]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(
            base_url=server.url, headers=headers, timeout=60, limits=limits
        ) as client:
            # create the row first so all 50 clients contend on one existing row
            assert (
                await client.post("/fn/counters.increment", json={"name": "c"})
            ).status_code == 200
            results = await asyncio.gather(*(client_loop(client) for _ in range(50)))
            r = await client.post("/fn/counters.read", json={"name": "c"})
            assert r.json() == {"value": 1001}
        return [a for attempts in results for a in attempts]

    attempts = asyncio.run(main())
    assert len(attempts) == 1000
    stats = server.runtime.transactor.stats
    assert stats.retries > 0, "50 clients on one row must have seen serialization failures"
    assert sum(a - 1 for a in attempts) > 0
    assert stats.exhausted == 0
    hot = server.runtime.hot_keys.top()
    assert hot and hot[0]["function"] == "counters.increment" and hot[0]["key"] == ""


def test_always_conflicting_mutation_ends_in_409_and_pool_is_idle(
    counters_app: AppFiles, serve: Callable[..., LiveServer], dev_token: str, database_url: str
) -> None:
    from runtime.config import RetrySettings

    retry = RetrySettings(max_attempts=4, max_elapsed_s=5.0, base_delay_s=0.001, max_delay_s=0.005)
    server = serve(counters_app, dev=True, retry=retry)
    with server.client(dev_token) as client:
        r = client.post("/fn/counters.always_conflicts", json={"name": "k"})
        assert r.status_code == 409
        err = r.json()["error"]
        assert err["code"] == "conflict"
        assert "retries were exhausted" in err["message"]
        assert r.headers["x-runtime-attempts"] == "4"
        # the connection went back to the pool, idle, with no session lock held
        deadline = time.monotonic() + 5
        while server.runtime.pool.get_stats().get(
            "pool_available", 0
        ) < server.runtime.pool.get_stats().get("pool_size", 0):
            assert time.monotonic() < deadline, server.runtime.pool.get_stats()
            time.sleep(0.02)
        assert client.post("/fn/counters.increment", json={"name": "after"}).status_code == 200
    with psycopg.connect(database_url) as conn:
        held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        assert held == (0,)
    assert server.runtime.transactor.stats.exhausted == 1
    assert server.runtime.transactor.stats.retries == 3


def test_runtime_connection_commands(database_url: str) -> None:
    """BEGIN/COMMIT, the hot-key lock and its unlock go as bare simple queries
    (runtime/db/connection.py): any 64-bit lock id works, errors raise psycopg's classes."""
    from runtime.db.connection import RuntimeConnection
    from runtime.transactions import commit_statement, lock_statement

    async def main() -> None:
        conn = await RuntimeConnection.connect(database_url, autocommit=True)
        try:
            for lock in (-(2**63), 2**63 - 1, 0, -1):
                await conn.command(lock_statement("advisory_lock", lock))
                await conn.command(b"BEGIN ISOLATION LEVEL SERIALIZABLE")
                await conn.documents.execute(
                    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"
                )
                assert await conn.documents.fetchone() == {"n": 1}
                await conn.command(commit_statement(None, lock))  # COMMIT; unlock
                await conn.documents.execute(
                    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"
                )
                assert await conn.documents.fetchone() == {"n": 0}
            with pytest.raises(psycopg.errors.DivisionByZero):
                await conn.command(b"SELECT 1; SELECT 1/0; SELECT 2")
            assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        finally:
            await conn.close()
        with pytest.raises(psycopg.OperationalError):
            await conn.command(b"SELECT 1")

    asyncio.run(main())


def test_a_caught_database_error_is_not_reported_as_committed(
    counters_app: AppFiles, serve: Callable[..., LiveServer], dev_token: str, database_url: str
) -> None:
    server = serve(counters_app, dev=True)
    with server.client(dev_token) as client:
        r = client.post("/fn/counters.swallows_error", json={"name": "lost"})
        assert r.status_code == 500, r.text
        assert r.json()["error"]["code"] == "internal"
        assert "caught and not re-raised" in r.json()["error"]["message"]
        assert client.post("/fn/counters.read", json={"name": "lost"}).json() == {"value": 0}


def test_waiting_too_long_for_a_hot_key_answers_504(
    counters_app: AppFiles, serve: Callable[..., LiveServer], dev_token: str, database_url: str
) -> None:
    from runtime.hotkeys import lock_id

    server = serve(counters_app, dev=True, statement_timeout_ms=300)
    for _ in range(5):  # make the key hot, as repeated conflicts would
        server.runtime.hot_keys.record_conflict("counters.always_conflicts", "k")
    assert server.runtime.hot_keys.is_hot("counters.always_conflicts", "k")
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_id("counters.always_conflicts", "k"),))
        with server.client(dev_token) as client:
            r = client.post("/fn/counters.always_conflicts", json={"name": "k"})
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout"
        assert "this key's turn" in r.json()["error"]["message"]
    stats = server.runtime.pool.get_stats()
    assert stats.get("pool_available", 0) == stats.get("pool_size", 0)
