"""What the change notice (`NOTIFY swarm_changes, '<tables>'; COMMIT`) costs a mutation.

    python -m benchmarks.bench_notify [--calls 2000] [--rounds 5] [--concurrency 16] [--fsync]

Two runtimes on one database, in-process (no HTTP): RUNTIME_SUBSCRIPTIONS off (plain COMMIT)
and on (each mutation that writes sends the notice in its COMMIT round trip). Phase 1: nobody
subscribes, so no session LISTENs (the default state of a deployment without WebSocket
clients). Phase 2: the "on" runtime holds one subscription, to a query of another table, so
it LISTENs and receives (and dispatches, without re-running anything) every notice.

Each round runs `--calls` sequential `runtime.call`s of a one-row UPDATE on each runtime,
alternating which goes first, then as many calls from `--concurrency` tasks on distinct rows.
Reported: the median over rounds of the mean latency of a sequential call, and of the
concurrent throughput. `--fsync` keeps fsync and synchronous_commit on (the embedded cluster
turns them off by default here, as in the tests): PostgreSQL serializes the commits of
notifying transactions on one lock held until their WAL is flushed, which is where
concurrency would show the notice's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from runtime.config import Settings
from runtime.embedded_pg import EmbeddedPostgres
from runtime.engine import Runtime
from runtime.types import Identity

MODULE = """
from runtime import mutation, query

@mutation(public=True, key="id")
async def touch(ctx, id: str, n: int):
    await ctx.db.patch("bench_rows", id, {"n": n})

@mutation(public=True)
async def seed(ctx, count: int):
    return [await ctx.db.insert("bench_rows", {"n": 0}) for _ in range(count)]

@query(public=True)
async def others(ctx):
    return await ctx.db.query("bench_other").count()
"""
ROW: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}}
SCHEMA = {
    "tables": {"bench_rows": ROW, "bench_other": ROW},
    "functions": {
        "bench.touch": {
            "args": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["id", "n"],
            }
        },
        "bench.seed": {
            "args": {
                "type": "object",
                "properties": {"count": {"type": "integer"}},
                "required": ["count"],
            }
        },
        "bench.others": {"args": {"type": "object", "properties": {}}},
    },
}


class Sink:
    """A subscriber that drops what it is pushed."""

    identity: Identity | None = None
    client_ip: str | None = None

    def push(self, frame: bytes) -> None:
        pass


async def sequential(runtime: Runtime, row: str, calls: int) -> float:
    """Mean seconds per call of `calls` sequential touches of one row."""
    fn = runtime.lookup("bench.touch", from_http=False)
    started = time.perf_counter()
    for i in range(calls):
        await runtime.call(fn, {"id": row, "n": i}, None, "bench")
    return (time.perf_counter() - started) / calls


async def concurrent(runtime: Runtime, rows: list[str], calls: int) -> float:
    """Calls per second of `calls` touches spread over one task per row."""
    fn = runtime.lookup("bench.touch", from_http=False)
    per_task = calls // len(rows)

    async def worker(row: str) -> None:
        for i in range(per_task):
            await runtime.call(fn, {"id": row, "n": i}, None, "bench")

    started = time.perf_counter()
    await asyncio.gather(*(worker(r) for r in rows))
    return per_task * len(rows) / (time.perf_counter() - started)


async def compare(
    runtimes: dict[str, Runtime], rows: list[str], args: argparse.Namespace
) -> dict[str, tuple[float, list[float], float]]:
    """{name: (median us/call sequential, each round's us/call, median calls/s concurrent)}."""
    latency: dict[str, list[float]] = {name: [] for name in runtimes}
    throughput: dict[str, list[float]] = {name: [] for name in runtimes}
    for runtime in runtimes.values():  # warm up: pools, prepared statements
        await sequential(runtime, rows[0], 200)
    for round_ in range(args.rounds):
        order = list(runtimes) if round_ % 2 == 0 else list(reversed(runtimes))
        for name in order:
            latency[name].append(await sequential(runtimes[name], rows[0], args.calls) * 1e6)
        for name in order:
            throughput[name].append(await concurrent(runtimes[name], rows[1:], args.calls))
    return {
        name: (statistics.median(latency[name]), latency[name], statistics.median(throughput[name]))
        for name in runtimes
    }


async def bench(
    url: str, app: Path, args: argparse.Namespace
) -> dict[str, tuple[float, list[float], float]]:
    base = Settings(
        functions_dir=app / "app_functions",
        schema_path=app / "schema.json",
        plugins_dir=app / "plugins",
        data_dir=app / ".runtime",
        pool_min=args.concurrency,
        pool_max=args.concurrency,
    )
    off = Runtime(replace(base, subscriptions=False), url)
    on = Runtime(replace(base, subscriptions=True), url)
    for runtime in (off, on):
        await runtime.start()
    try:
        seed = off.lookup("bench.seed", from_http=False)
        rows = (await off.call(seed, {"count": args.concurrency + 1}, None, "seed")).value
        results = {}
        phase1 = await compare({"off": off, "on, no subscriber": on}, rows, args)
        results.update(phase1)
        hub = on.subscriptions
        assert hub is not None
        await hub.subscribe(Sink(), "bench", "bench.others", {})
        for _ in range(500):
            if hub.settled:
                break
            await asyncio.sleep(0.01)
        phase2 = await compare({"off ": off, "on, 1 subscriber (LISTEN)": on}, rows, args)
        results.update(phase2)
        return results
    finally:
        for runtime in (off, on):
            await runtime.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fsync", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        root = Path(tmp)
        app = root / "app"
        (app / "app_functions").mkdir(parents=True)
        (app / "plugins").mkdir()
        (app / "app_functions" / "bench.py").write_text(MODULE)
        (app / "schema.json").write_text(json.dumps(SCHEMA))
        cluster = EmbeddedPostgres(root / "pg", fsync=args.fsync, log=lambda _m: None)
        cluster.start()
        try:
            url = cluster.create_database("bench_notify")
            results = asyncio.run(bench(url, app, args))
        finally:
            cluster.stop()
    print(
        f"{args.calls} calls x {args.rounds} rounds, concurrency {args.concurrency}, "
        f"fsync {'on' if args.fsync else 'off'}"
    )
    for name, (median_us, each, per_s) in results.items():
        print(
            f"  {name:<28} {median_us:7.1f} us/call sequential (best round {min(each):5.1f})"
            f"   {per_s:7.0f} calls/s concurrent"
        )


if __name__ == "__main__":
    main()
