"""How the client drives psycopg: the benchmark transaction on psycopg alone, four ways.

    python -m benchmarks.bench_psycopg [--seconds 6] [--tasks 16] [--rounds 3]

The transaction of `bench.touch` (BEGIN ISOLATION LEVEL SERIALIZABLE, point SELECT, UPDATE,
COMMIT) from `--tasks` asyncio tasks under uvloop, no HTTP, on the benchmark cluster
(.runtime/bench/pg) with 100k rows, each variant in turn (order alternating per round):

  fresh cursor    a cursor per statement, `conn.execute(...)`: benchmarks/handwritten.py's way;
  reused cursor   one cursor per connection for every statement;
  runtime         what the runtime does (runtime/db/connection.py): the reused cursor for the
                  SELECT and UPDATE, BEGIN and COMMIT by `RuntimeConnection.command`;
  pipeline        psycopg pipeline mode: BEGIN + SELECT in one round trip, UPDATE + COMMIT in
                  another.

Prints each variant's median calls/s and client CPU per call (this process's utime+stime over
the calls), and the ratio to `fresh cursor`. Serialization failures (rare at 100k rows) are
rolled back and not counted as calls.
"""

# ruff: noqa: E501  (report lines and SQL read better unwrapped)
from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from benchmarks._common import embedded_postgres, fresh_database, median, say
from benchmarks.handwritten import BEGIN, SELECT, UPDATE  # the same statements, one definition
from runtime.db.connection import RuntimeConnection

SCHEMA = """
CREATE TABLE tickets (
    _id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    _creation_time timestamptz NOT NULL DEFAULT now(),
    title text NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    touches bigint NOT NULL DEFAULT 0,
    heartbeat_at timestamptz
)
"""
Touch = Callable[[RuntimeConnection, str], Awaitable[None]]


async def fresh_cursor(conn: RuntimeConnection, ticket_id: str) -> None:
    await conn.execute(BEGIN)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(SELECT, (ticket_id,))
    row = await cur.fetchone()
    assert row is not None
    cur2 = await conn.execute(UPDATE, (row["touches"] + 1, datetime.now(UTC), ticket_id))
    assert cur2.rowcount == 1
    await conn.execute("COMMIT")


async def reused_cursor(conn: RuntimeConnection, ticket_id: str) -> None:
    cur = conn.documents
    await cur.execute(BEGIN)
    await cur.execute(SELECT, (ticket_id,))
    row = await cur.fetchone()
    assert row is not None
    await cur.execute(UPDATE, (row["touches"] + 1, datetime.now(UTC), ticket_id))
    assert cur.rowcount == 1
    await cur.execute("COMMIT")


async def runtime_way(conn: RuntimeConnection, ticket_id: str) -> None:
    cur = conn.documents
    await conn.command(BEGIN.encode())
    await cur.execute(SELECT, (ticket_id,))
    row = await cur.fetchone()
    assert row is not None
    await cur.execute(UPDATE, (row["touches"] + 1, datetime.now(UTC), ticket_id))
    assert cur.rowcount == 1
    await conn.command(b"COMMIT")


async def pipeline(conn: RuntimeConnection, ticket_id: str) -> None:
    cur = conn.documents
    async with conn.pipeline():
        await conn.execute(BEGIN)
        await cur.execute(SELECT, (ticket_id,))
    row = await cur.fetchone()
    assert row is not None
    async with conn.pipeline():
        await cur.execute(UPDATE, (row["touches"] + 1, datetime.now(UTC), ticket_id))
        await conn.execute("COMMIT")
    assert cur.rowcount == 1


VARIANTS: dict[str, Touch] = {
    "fresh cursor": fresh_cursor,
    "reused cursor": reused_cursor,
    "runtime": runtime_way,
    "pipeline": pipeline,
}


async def measure(
    url: str, ids: list[str], touch: Touch, seconds: float, tasks: int
) -> tuple[float, float]:
    """(calls/s, client CPU µs per call) for one variant."""
    pool = AsyncConnectionPool(
        url,
        connection_class=RuntimeConnection,
        min_size=tasks,
        max_size=tasks,
        kwargs={"autocommit": True, "prepare_threshold": 2},
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    calls = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal calls
        while time.perf_counter() < deadline:
            async with pool.connection() as conn:
                try:
                    await touch(conn, random.choice(ids))
                except psycopg.errors.SerializationFailure:
                    await conn.execute("ROLLBACK")
                    continue
            calls += 1

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(tasks)))
    finally:
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        await pool.close()
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return calls / elapsed, cpu / max(calls, 1) * 1e6


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.bench_psycopg", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=6.0, help="seconds per variant per round")
    p.add_argument("--tasks", type=int, default=16, help="concurrent tasks (and connections)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, order alternating")
    p.add_argument("--rows", type=int, default=100_000, help="tickets to seed")
    a = p.parse_args(argv)
    import uvloop

    with embedded_postgres() as cluster:
        url = fresh_database(cluster, "bench_psycopg")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
            conn.execute(
                "INSERT INTO tickets (title) SELECT 'Ticket ' || g FROM generate_series(1, %s) g",
                (a.rows,),
            )
            ids = [str(r[0]) for r in conn.execute("SELECT _id FROM tickets")]
        say(
            f"\n== psycopg alone: bench.touch's transaction, {a.tasks} tasks, {a.seconds:.0f} s per variant, {a.rounds} rounds =="
        )
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for round_no in range(a.rounds):
            order = list(VARIANTS) if round_no % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                rate, cpu = uvloop.run(measure(url, ids, VARIANTS[name], a.seconds, a.tasks))
                results[name].append((rate, cpu))
                say(
                    f"  round {round_no + 1} {name:<14} {rate:>7,.0f}/s  client CPU {cpu:>4.0f} us/call"
                )
        say("  -- medians --")
        base_rate = median([r for r, _ in results["fresh cursor"]])
        base_cpu = median([c for _, c in results["fresh cursor"]])
        for name, values in results.items():
            rate, cpu = median([r for r, _ in values]), median([c for _, c in values])
            say(
                f"  {name:<14} {rate:>7,.0f}/s ({rate / base_rate:.2f}x)  client CPU {cpu:>4.0f} us/call ({cpu - base_cpu:+.0f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
