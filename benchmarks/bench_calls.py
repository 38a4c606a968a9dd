"""Calls per second: the runtime against a hand-written Starlette + psycopg-pool peer.

    python -m benchmarks.bench_calls [--duration 10] [--connections 16] [--rounds 3] ...
    make bench ARGS="--rounds 5"

One run, side by side, on one embedded PostgreSQL (.runtime/bench/pg, fsync off) with a fresh
database `bench_calls` whose `tickets` table (benchmarks/app/schema.json) is seeded with 100k
rows:

  A  `swarm-runtime serve --workers 1` serving benchmarks/app (POST /fn/bench.touch);
  B  benchmarks/handwritten.py under uvicorn (1 worker): the same SQL in the same
     SERIALIZABLE transaction, 5 tries, 409 when exhausted.

1. Context: the ceilings on this machine with the same wrk settings (bare Starlette GET, the
   runtime's GET /healthz, and psycopg alone: the transaction from 16 tasks with no HTTP).
2. Low contention: wrk -t1 -c16 over a random id of the 100k per request, rounds A/B then B/A
   alternately; each server's median round, and the runtime/hand-written ratios (the goal:
   runtime >= 0.9x hand-written calls/s).
3. Hot keys: wrk -c64 over 10 rows (bench.hot): calls/s, goodput (2xx/s), non-2xx, p95, p99;
   the runtime must answer no non-2xx. Then the runtime's /_runtime/status transactions and
   hot keys (what an operator sees).
4. Argument validation: msgspec vs jsonschema (benchmarks.bench_validation).

Latency percentiles come from wrk's histogram via the Lua done() hook (benchmarks/lua/).
`cpu us/call` is the server process's own CPU time (utime+stime from /proc) divided by the
calls it answered in the round: the per-call cost in the server, independent of how noisy
the machine is. Everything runs on 127.0.0.1; every process is stopped at the end.
"""

# ruff: noqa: E501  (report lines and SQL read better unwrapped)
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._common import (
    BENCH_DIR,
    DATA,
    LUA_DIR,
    VENV_BIN,
    Server,
    admin_token,
    cpu_seconds,
    embedded_postgres,
    free_port,
    fresh_database,
    median,
    run_wrk,
    runtime_status,
    say,
    servers_stopped,
    time_limit,
    wrk_argv,
    wrk_binary,
)

APP = BENCH_DIR / "app"
DATABASE = "bench_calls"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.bench_calls", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000, help="tickets to seed (100000)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per low-contention round")
    p.add_argument("--connections", type=int, default=16, help="wrk connections, low contention")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--rounds", type=int, default=3, help="low-contention rounds per server")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per server")
    p.add_argument("--hot-rows", type=int, default=10, help="rows in the hot set (10)")
    p.add_argument("--hot-connections", type=int, default=64, help="wrk connections, hot keys")
    p.add_argument("--hot-duration", type=float, default=10.0, help="seconds per hot round")
    p.add_argument("--hot-rounds", type=int, default=2, help="hot-key rounds per server")
    p.add_argument("--skip-context", action="store_true", help="skip the ceilings")
    p.add_argument("--skip-hot", action="store_true", help="skip the hot-key scenario")
    p.add_argument("--skip-validation", action="store_true", help="skip msgspec vs jsonschema")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--max-minutes", type=float, default=20.0, help="hard bound on the whole run")
    return p.parse_args(argv)


# -- setup --------------------------------------------------------------------------------


def start_runtime(url: str, token: str, *, name: str = "bench-runtime", knobs: str = "") -> Server:
    """`swarm-runtime serve --workers 1` on benchmarks/app (BENCH_KNOBS: profile_calls only)."""
    port = free_port()
    server = Server(
        name,
        [
            VENV_BIN / "swarm-runtime",
            "serve",
            "--functions",
            APP / "app_functions",
            "--schema",
            APP / "schema.json",
            "--plugins",
            APP / "plugins",
            "--data",
            DATA / "data",
            "--database-url",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        port,
        env={
            "BENCH_ADMIN_TOKEN": token,
            "BENCH_KNOBS": knobs,
            "RUNTIME_DEV": "0",
            "RUNTIME_RELOAD": "0",
        },
    )
    server.wait_ready("/readyz")
    return server


def start_handwritten(
    url: str, *, name: str = "bench-handwritten", pool: str = "", hot: str = ""
) -> Server:
    """benchmarks/handwritten.py under uvicorn, 1 worker (pool, hot: profile_calls only)."""
    port = free_port()
    server = Server(
        name,
        [
            VENV_BIN / "python",
            "-m",
            "uvicorn",
            "--factory",
            "benchmarks.handwritten:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        port,
        env={"HANDWRITTEN_DATABASE_URL": url, "HANDWRITTEN_POOL": pool, "HANDWRITTEN_HOT": hot},
    )
    server.wait_ready("/healthz")
    return server


def seed(url: str, rows: int, hot_rows: int) -> tuple[Path, Path]:
    """Seed `rows` tickets (the runtime created the table); write the id files for wrk."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO tickets (tenant_id, title, state, priority, assignee_id, touches)
            SELECT 'tenant-' || (g %% 20), 'Ticket ' || g || ': ' || repeat('x', 40 + g %% 60),
                   (ARRAY['draft','pending','claimed','in_progress','review','completed'])[1 + g %% 6],
                   g %% 10, 'agent-' || (g %% 50), 0
            FROM generate_series(1, %s) AS g
            """,
            (rows,),
        )
        conn.execute("VACUUM ANALYZE tickets")
        ids = [r[0] for r in conn.execute("SELECT _id::text FROM tickets ORDER BY random()")]
    ids_file, hot_file = DATA / "ticket_ids.txt", DATA / "hot_ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    hot_file.write_text("\n".join(ids[:hot_rows]) + "\n")
    say(
        f"seeded {len(ids):,} tickets in {time.perf_counter() - started:.1f} s "
        f"(hot set: {hot_rows} of them)"
    )
    return ids_file, hot_file


# -- measuring ----------------------------------------------------------------------------


def measure(
    server: Server,
    path: str,
    script: Path,
    *,
    connections: int,
    duration: float,
    threads: int,
    script_args: list[str],
) -> dict[str, Any]:
    """One wrk run against `server`, plus the server's CPU time per answered call."""
    argv = wrk_argv(
        server.base + path,
        script,
        connections=connections,
        duration_s=duration,
        threads=threads,
        timeout_s=10.0,
        script_args=script_args,
    )
    cpu0 = cpu_seconds(server.pid)
    result = run_wrk(argv, duration)
    cpu = cpu_seconds(server.pid) - cpu0
    result["cpu_us_per_call"] = cpu * 1e6 / result["requests"] if result["requests"] else 0.0
    result["server_cpu_util"] = cpu / result["seconds"] if result["seconds"] else 0.0
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} died during the run:\n{server.tail()}")
    return result


def line(label: str, r: dict[str, Any]) -> str:
    return (
        f"  {label:<24}{r['rps']:>9,.0f}/s  p50 {r['p50_us'] / 1000:6.2f}  p95 {r['p95_us'] / 1000:6.2f}"
        f"  p99 {r['p99_us'] / 1000:7.2f} ms  non-2xx {r['non2xx']:>5}  sock-err {r['socket_errors']:>3}"
        f"  cpu {r['cpu_us_per_call']:5.0f} us/call ({r['server_cpu_util'] * 100:3.0f}% core)"
    )


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "goodput", "p50_us", "p95_us", "p99_us", "cpu_us_per_call", "server_cpu_util")
    out: dict[str, Any] = {k: median([r[k] for r in rounds]) for k in keys}
    out["non2xx"] = sum(r["non2xx"] for r in rounds)
    out["socket_errors"] = sum(r["socket_errors"] for r in rounds)
    out["requests"] = sum(r["requests"] for r in rounds)
    return out


def warm_up(
    servers: dict[str, Server],
    path: str,
    ids_file: Path,
    *,
    connections: int,
    duration: float,
    threads: int,
) -> None:
    """One unrecorded wrk run per server over `ids_file`: prepared statements made, pool at size."""
    for name, server in servers.items():
        measure(
            server,
            path,
            LUA_DIR / "ids.lua",
            connections=connections,
            duration=duration,
            threads=threads,
            script_args=[str(ids_file)],
        )
        say(f"warmed up {name} ({duration:.0f} s)")


def interleaved(
    servers: dict[str, Server],
    path: str,
    ids_file: Path,
    rounds: int,
    prefix: str = "round ",
    **kwargs: Any,
) -> dict[str, list[dict[str, Any]]]:
    """`rounds` wrk runs per server over `ids_file`, rotating which goes first: A B, B A, A B
    ... for two servers; A B C, B C A, C A B ... for three. `kwargs` go to `measure`."""
    names = list(servers)
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    script, script_args = LUA_DIR / "ids.lua", [str(ids_file)]
    for i in range(rounds):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            r = measure(servers[name], path, script, script_args=script_args, **kwargs)
            results[name].append(r)
            say(line(f"{prefix}{i + 1} {name}", r))
    return results


def ratio_block(results: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    a, b = results["runtime"], results["handwritten"]
    paired = [x["rps"] / y["rps"] for x, y in zip(a, b, strict=True) if y["rps"]]
    ma, mb = medians(a), medians(b)
    return {
        "rps_ratio_paired_median": median(paired),
        "rps_ratio_of_medians": ma["rps"] / mb["rps"] if mb["rps"] else float("nan"),
        "p95_ratio": ma["p95_us"] / mb["p95_us"] if mb["p95_us"] else float("nan"),
        "p99_ratio": ma["p99_us"] / mb["p99_us"] if mb["p99_us"] else float("nan"),
        "cpu_ratio": ma["cpu_us_per_call"] / mb["cpu_us_per_call"]
        if mb["cpu_us_per_call"]
        else float("nan"),
    }


# -- the run ------------------------------------------------------------------------------


def context(
    runtime: Server, handwritten: Server, url: str, ids_file: Path, a: argparse.Namespace
) -> dict[str, Any]:
    say("\n== context: ceilings on this machine (one run each, 5 s) ==")
    out: dict[str, Any] = {}
    ping = LUA_DIR / "ping.lua"
    for label, server, path in (
        ("bare Starlette GET /ping", handwritten, "/ping"),
        ("runtime GET /healthz", runtime, "/healthz"),
    ):
        r = measure(
            server,
            path,
            ping,
            connections=a.connections,
            duration=5,
            threads=a.threads,
            script_args=[],
        )
        out[label] = r
        say(line(label, r))
    done = subprocess.run(
        [
            VENV_BIN / "python",
            "-m",
            "benchmarks.handwritten",
            "psycopg-alone",
            url,
            str(ids_file),
            "5",
            str(a.connections),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    alone = json.loads(done.stdout.strip().splitlines()[-1])
    out["psycopg alone"] = alone
    say(
        f"  {'psycopg alone (no HTTP)':<24}{alone['calls_per_s']:>9,.0f}/s  "
        f"({a.connections} asyncio tasks, same transaction, failures {alone['failures']})"
    )
    return out


def low_contention(
    servers: dict[str, Server], ids_file: Path, a: argparse.Namespace
) -> dict[str, Any]:
    say(
        f"\n== low contention: POST /fn/bench.touch, wrk -t{a.threads} -c{a.connections} "
        f"-d{a.duration:.0f}s, random id of {a.rows:,}, {a.rounds} rounds each, interleaved =="
    )
    results = interleaved(
        servers,
        "/fn/bench.touch",
        ids_file,
        a.rounds,
        connections=a.connections,
        duration=a.duration,
        threads=a.threads,
    )
    summary = {n: medians(r) for n, r in results.items()}
    ratios = ratio_block(results)
    say("  -- medians --")
    for name, m in summary.items():
        say(line(f"{name} (median)", m))
    say(
        f"  runtime / hand-written: calls/s {ratios['rps_ratio_paired_median']:.2f}x "
        f"(median of paired rounds; ratio of medians {ratios['rps_ratio_of_medians']:.2f}x), "
        f"p95 {ratios['p95_ratio']:.2f}x, p99 {ratios['p99_ratio']:.2f}x, "
        f"server CPU per call {ratios['cpu_ratio']:.2f}x"
    )
    ok = ratios["rps_ratio_paired_median"] >= 0.9
    say(f"  goal runtime >= 0.9x hand-written calls/s: {'met' if ok else 'NOT met'}")
    return {"rounds": results, "median": summary, "ratios": ratios, "goal_met": ok}


def hot_keys(
    servers: dict[str, Server], hot_file: Path, token: str, a: argparse.Namespace
) -> dict[str, Any]:
    say(
        f"\n== hot keys: POST /fn/bench.hot, wrk -t{a.threads} -c{a.hot_connections} "
        f"-d{a.hot_duration:.0f}s over {a.hot_rows} rows, {a.hot_rounds} rounds each, interleaved =="
    )
    results = interleaved(
        servers,
        "/fn/bench.hot",
        hot_file,
        a.hot_rounds,
        connections=a.hot_connections,
        duration=a.hot_duration,
        threads=a.threads,
    )
    summary = {n: medians(r) for n, r in results.items()}
    say("  -- medians (non-2xx and socket errors summed over rounds) --")
    say(f"  {'':<24}{'calls/s':>10}{'goodput':>10}{'non-2xx':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, m in summary.items():
        say(
            f"  {name:<24}{m['rps']:>10,.0f}{m['goodput']:>10,.0f}{m['non2xx']:>9}"
            f"{m['p95_us'] / 1000:>9.1f}{m['p99_us'] / 1000:>9.1f}"
        )
    rt, hw = summary["runtime"], summary["handwritten"]
    say(
        f"  runtime / hand-written: goodput {rt['goodput'] / hw['goodput']:.2f}x, "
        f"p99 {rt['p99_us'] / hw['p99_us']:.2f}x"
    )
    ok = rt["non2xx"] == 0 and rt["socket_errors"] == 0
    say(f"  goal runtime answers 0 non-2xx under hot keys: {'met' if ok else 'NOT met'}")
    status = runtime_status(servers["runtime"], token)
    say("\n  runtime /_runtime/status after the hot rounds:")
    say(f"    transactions: {json.dumps(status.get('transactions'))}")
    say("    hot_keys (top 10 by conflicts):")
    for hk in (status.get("hot_keys") or [])[:10]:
        say(
            f"      {hk['function']:<10} {hk['key']}  conflicts {hk['conflicts']:>5}  "
            f"lock_waits {hk['lock_waits']:>6}  hot {hk['hot']!s:<5}  "
            f"{hk['seconds_since_conflict']:.1f} s ago"
        )
    say(f"    pool: {json.dumps(status.get('pool'))}")
    return {"rounds": results, "median": summary, "status": status, "goal_met": ok}


def validation() -> dict[str, float]:
    from benchmarks.bench_validation import bench_validation

    say("\n== argument validation (benchmarks.bench_validation): tickets.claim-like args ==")
    r = bench_validation()
    say(f"  msgspec decode+validate+kwargs   {r['msgspec_ns']:>10,.0f} ns/call")
    say(
        f"  jsonschema json.loads+validate   {r['jsonschema_ns']:>10,.0f} ns/call   ({r['ratio']:.0f}x slower)"
    )
    say(
        f"    ... with format checking       {r['jsonschema_formats_ns']:>10,.0f} ns/call   "
        f"({r['ratio_formats']:.0f}x slower)"
    )
    say(f"  goal msgspec >= 25x faster: {'met' if r['ratio'] >= 25 else 'NOT met'}")
    return r


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    wrk_binary()
    token = admin_token()
    report: dict[str, Any] = {"args": vars(a) | {"json": str(a.json) if a.json else None}}
    with (
        servers_stopped() as servers,
        time_limit(a.max_minutes),
        embedded_postgres() as cluster,
    ):
        url = fresh_database(cluster, DATABASE)
        say(f"database {DATABASE} on the embedded cluster in {cluster.home}")
        servers["runtime"] = start_runtime(url, token)
        ids_file, hot_file = seed(url, a.rows, a.hot_rows)
        servers["handwritten"] = start_handwritten(url)
        say(
            f"runtime      pid {servers['runtime'].pid}  {servers['runtime'].base}  "
            "(swarm-runtime serve --workers 1)"
        )
        say(
            f"handwritten  pid {servers['handwritten'].pid}  {servers['handwritten'].base}  "
            "(uvicorn --workers 1 benchmarks.handwritten)"
        )
        warm_up(
            servers,
            "/fn/bench.touch",
            ids_file,
            connections=a.connections,
            duration=a.warmup,
            threads=a.threads,
        )
        if not a.skip_context:
            report["context"] = context(
                servers["runtime"], servers["handwritten"], url, ids_file, a
            )
        report["low_contention"] = low_contention(servers, ids_file, a)
        if not a.skip_hot:
            report["hot_keys"] = hot_keys(servers, hot_file, token, a)
        for server in servers.values():
            server.stop()
    if not a.skip_validation:
        report["validation"] = validation()
    if a.json:
        for section in ("low_contention", "hot_keys"):
            for rounds in report.get(section, {}).get("rounds", {}).values():
                for r in rounds:
                    r.pop("raw", None)
        a.json.write_text(json.dumps(report, indent=2, default=str))
        say(f"\nwrote {a.json}")
    met = report["low_contention"]["goal_met"] and report.get("hot_keys", {}).get("goal_met", True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
