"""The hand-written peer of `bench.touch` / `bench.hot`: Starlette + psycopg-pool, no runtime.

What a careful engineer writes by hand for the same call, issuing the same SQL the runtime
issues (runtime/db/documents.py and runtime/sql/runtime.sql) on the same kind of pool
(autocommit connections, min 4 / max 16):

    BEGIN ISOLATION LEVEL SERIALIZABLE
    SELECT * FROM "tickets" WHERE _id = %s::uuid
    UPDATE "tickets" SET "touches" = %s::bigint, "heartbeat_at" = %s::timestamptz WHERE _id = %s::uuid
    COMMIT

retried up to 5 tries on 40001/40P01 (exponential backoff with full jitter, 2 ms base, 100 ms
cap, the runtime's defaults), answering 409 once the tries are exhausted. No hot-key queuing,
no argument schema, no plugins.

Served by uvicorn (1 worker):

    HANDWRITTEN_DATABASE_URL=postgresql://... uvicorn --factory benchmarks.handwritten:create_app

Also `python -m benchmarks.handwritten psycopg-alone URL IDS_FILE [SECONDS] [CONCURRENCY]`:
the same transaction from 16 asyncio tasks with no HTTP at all (the database-side ceiling).
"""

# ruff: noqa: E501  (report lines and SQL read better unwrapped)
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

BEGIN = "BEGIN ISOLATION LEVEL SERIALIZABLE"
SELECT = 'SELECT * FROM "tickets" WHERE _id = %s::uuid'
UPDATE = 'UPDATE "tickets" SET "touches" = %s::bigint, "heartbeat_at" = %s::timestamptz WHERE _id = %s::uuid'
TRIES = 5
RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


class NotFound(Exception):
    pass


class Exhausted(Exception):
    pass


async def touch_once(conn: psycopg.AsyncConnection[Any], ticket_id: str) -> int:
    """One call: the transaction with up to TRIES tries; the new counter value."""
    for attempt in range(1, TRIES + 1):
        try:
            await conn.execute(BEGIN)
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(SELECT, (ticket_id,))
            row = await cur.fetchone()
            if row is None:
                await conn.execute("ROLLBACK")
                raise NotFound(ticket_id)
            touches = row["touches"] + 1
            await conn.execute(UPDATE, (touches, datetime.now(UTC), ticket_id))
            await conn.execute("COMMIT")
            return int(touches)
        except RETRYABLE:
            if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
            if attempt == TRIES:
                raise Exhausted() from None
            await asyncio.sleep(random.uniform(0, min(0.1, 0.002 * 2 ** (attempt - 1))))
        except BaseException:
            if not conn.closed and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("ROLLBACK")
            raise
    raise AssertionError("unreachable")


def lock_id(function: str, key: str) -> int:
    """Same 64-bit advisory lock id as runtime/hotkeys.py."""
    digest = hashlib.blake2b(f"{function}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def make_pool(url: str) -> AsyncConnectionPool:
    if os.environ.get("HANDWRITTEN_POOL") == "runtime":  # profile_calls ablation only
        from runtime.config import Settings
        from runtime.db.pool import make_pool as runtime_pool

        return runtime_pool(Settings(), url)  # its connection set-up: loaders, options
    return AsyncConnectionPool(
        url, min_size=4, max_size=16, kwargs={"autocommit": True}, open=False, timeout=2.0
    )


def create_app(url: str | None = None) -> Starlette:
    pool = make_pool(url or os.environ["HANDWRITTEN_DATABASE_URL"])
    # profile_calls `hot` only: other strategies for bench.hot (default: optimistic retries)
    hot_strategy = os.environ.get("HANDWRITTEN_HOT", "")
    key_locks: dict[str, asyncio.Lock] = {}

    async def touch_hot(ticket_id: str) -> int:
        if hot_strategy == "advisory":  # the runtime's: session lock before BEGIN, always
            lock = lock_id("bench.hot", ticket_id)
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_advisory_lock(%s)", (lock,))
                try:
                    return await touch_once(conn, ticket_id)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (lock,))
        if hot_strategy == "queue":  # in-process queue per key, before taking a connection
            key_lock = key_locks.setdefault(ticket_id, asyncio.Lock())
            async with key_lock, pool.connection() as conn:
                return await touch_once(conn, ticket_id)
        raise ValueError(f"HANDWRITTEN_HOT={hot_strategy!r}")

    async def touch(request: Request) -> Response:
        try:
            args = json.loads(await request.body())
            ticket_id = args["ticket_id"]
            if not isinstance(ticket_id, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": {"code": "invalid_args"}}, 400)
        try:
            if hot_strategy and request.url.path == "/fn/bench.hot":
                touches = await touch_hot(ticket_id)
            else:
                async with pool.connection() as conn:
                    touches = await touch_once(conn, ticket_id)
        except NotFound:
            return JSONResponse({"error": {"code": "not_found"}}, 404)
        except Exhausted:
            return JSONResponse(
                {"error": {"code": "conflict", "message": "retries exhausted"}}, 409
            )
        return JSONResponse({"value": {"touches": touches}})

    async def ping(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            await pool.close()

    return Starlette(
        routes=[
            Route("/fn/bench.touch", touch, methods=["POST"]),
            Route("/fn/bench.hot", touch, methods=["POST"]),
            Route("/healthz", ping, methods=["GET"]),
            Route("/ping", ping, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def psycopg_alone(
    url: str, ids: list[str], seconds: float, concurrency: int
) -> dict[str, float]:
    """The same transaction from `concurrency` tasks, no HTTP: calls/s and failures."""
    pool = make_pool(url)
    await pool.open(wait=True, timeout=30)
    calls = failures = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal calls, failures
        while time.perf_counter() < deadline:
            try:
                async with pool.connection() as conn:
                    await touch_once(conn, random.choice(ids))
                calls += 1
            except (Exhausted, NotFound):
                failures += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await pool.close()
    elapsed = time.perf_counter() - started
    return {"calls_per_s": calls / elapsed, "failures": failures, "seconds": elapsed}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "psycopg-alone":
        print(__doc__, file=sys.stderr)
        return 2
    url, ids_file = argv[1], argv[2]
    seconds = float(argv[3]) if len(argv) > 3 else 5.0
    concurrency = int(argv[4]) if len(argv) > 4 else 16
    with open(ids_file) as handle:
        ids = [line.strip() for line in handle if line.strip()]
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(psycopg_alone(url, ids, seconds, concurrency))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
