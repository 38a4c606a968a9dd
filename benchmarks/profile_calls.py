"""Where a runtime call's time goes, three ways (the measurements behind docs/benchmarks.md).

    python -m benchmarks.profile_calls ablation [--rounds 3 --duration 10]
    python -m benchmarks.profile_calls hot [--rounds 2 --duration 10]
    python -m benchmarks.profile_calls micro
    python -m benchmarks.profile_calls asgi
    python -m benchmarks.profile_calls spy [--seconds 15] [--gil] [--target runtime|handwritten|both]

`ablation`: the runtime as shipped, the runtime with its per-call log line silenced, the runtime
without the call_finished plugins (call_log, metrics), the same with gc.freeze(), the
hand-written peer, and the hand-written peer on the runtime's pool set-up, side by side
under the same wrk load (rounds interleaved, rotating the order). Reports calls/s and the
server's CPU time per call; CPU per call is the robust number on a noisy machine, and the
differences between variants are what each piece costs. Variants are switched by
benchmarks/app/plugins/bench_knobs.py (BENCH_KNOBS), once at startup, never per call.

`hot`: bench.hot under wrk -c64 over 10 rows for the runtime (as shipped and without its
call_finished plugins) and the hand-written peer with three hot-key strategies: optimistic
retries, the runtime's advisory lock before BEGIN (on every call), an in-process asyncio.Lock
per key taken before a pool connection.

`asgi`: both apps driven in-process through ASGI on a fake pool (no psycopg, no sockets): the
Python cost per call by layer, then a cProfile of the runtime's path.

`micro`: in-process timings (ns per call, best of 5) of each step the runtime adds around the
SQL, on the real objects (the bench app's registry, the runtime's plugin manager, its log
formatter writing to /dev/null). No server, no database.

`spy`: py-spy sampling of the server under load, as inclusive shares per bucket and top
self-time frames; `--gil` keeps only samples holding the GIL, which drops the time the process
sat preempted inside libpq's send() (on 2 busy cores that is half the wall-clock samples).
py-spy: `pip install py-spy`, or --py-spy PATH (.runtime/bench/tools/bin/py-spy is looked for).
"""

# ruff: noqa: E501  (report lines and SQL read better unwrapped)
from __future__ import annotations

import argparse
import asyncio
import collections
import inspect
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import (
    DATA,
    LUA_DIR,
    Server,
    embedded_postgres,
    fresh_database,
    median,
    per_call_ns,
    say,
    servers_stopped,
)
from benchmarks.bench_calls import (
    APP,
    DATABASE,
    interleaved,
    measure,
    seed,
    start_handwritten,
    start_runtime,
    warm_up,
)

# -- ablation -----------------------------------------------------------------------------

VARIANTS = {
    "runtime (shipped)": "",
    "runtime, call log quiet": "quiet_call_log",
    "runtime, no call_finished": "no_call_log,no_metrics",
    "runtime, no c_f + gc.freeze": "no_call_log,no_metrics,gc_freeze",
}


def rotated_rounds(
    servers: dict[str, Server], path: str, ids_file: Path, a: argparse.Namespace, header: str
) -> dict[str, list[dict[str, Any]]]:
    """Warm every server up, say `header`, then `a.rounds` rounds of wrk -t1 on each, the order
    rotated every round; each server's results."""
    warm_up(servers, path, ids_file, connections=a.connections, duration=a.warmup, threads=1)
    say(header)
    return interleaved(
        servers,
        path,
        ids_file,
        a.rounds,
        prefix="",
        connections=a.connections,
        duration=a.duration,
        threads=1,
    )


def ablation(a: argparse.Namespace) -> None:
    with servers_stopped() as servers, embedded_postgres() as cluster:
        url = fresh_database(cluster, DATABASE)
        for i, (label, knobs) in enumerate(VARIANTS.items()):
            servers[label] = start_runtime(url, "unused", name=f"bench-runtime-{i}", knobs=knobs)
            if i == 0:
                ids_file, _ = seed(url, a.rows, 10)
        servers["hand-written"] = start_handwritten(url)
        servers["hand-written, runtime pool"] = start_handwritten(
            url, name="bench-handwritten-rtpool", pool="runtime"
        )
        results = rotated_rounds(
            servers,
            "/fn/bench.touch",
            ids_file,
            a,
            f"\n== ablation: POST /fn/bench.touch, wrk -t1 -c{a.connections} -d{a.duration:.0f}s, "
            f"{a.rounds} rounds, order rotated each round ==",
        )
        say("  -- medians --")
        base_cpu = median([x["cpu_us_per_call"] for x in results["hand-written"]])
        base_rps = median([x["rps"] for x in results["hand-written"]])
        for name in servers:
            cpu = median([x["cpu_us_per_call"] for x in results[name]])
            rps = median([x["rps"] for x in results[name]])
            say(
                f"  {name:<28}{rps:>8,.0f}/s ({rps / base_rps:4.2f}x)   CPU {cpu:5.0f} us/call "
                f"({cpu - base_cpu:+5.0f} us vs hand-written)"
            )


# -- hot keys: strategies -------------------------------------------------------------------


def hot(a: argparse.Namespace) -> None:
    """bench.hot under wrk -c64 over 10 rows: the runtime, and the hand-written peer with three
    strategies: optimistic retries (5 tries), the runtime's session advisory lock before BEGIN
    (taken on every call), and an in-process asyncio.Lock per key taken before the pool."""
    with servers_stopped() as servers, embedded_postgres() as cluster:
        url = fresh_database(cluster, DATABASE)
        servers["runtime (shipped)"] = start_runtime(url, "unused")
        _, hot_file = seed(url, a.rows, a.hot_rows)
        servers["runtime, no call_finished"] = start_runtime(
            url, "unused", name="bench-runtime-nocf", knobs="no_call_log,no_metrics"
        )
        for label, strategy in (
            ("hw optimistic (5 tries)", ""),
            ("hw advisory lock always", "advisory"),
            ("hw in-process key queue", "queue"),
        ):
            servers[label] = start_handwritten(
                url, name=f"bench-hw-{strategy or 'opt'}", hot=strategy
            )
        results = rotated_rounds(
            servers,
            "/fn/bench.hot",
            hot_file,
            a,
            f"\n== hot keys: POST /fn/bench.hot, wrk -t1 -c{a.connections} -d{a.duration:.0f}s over "
            f"{a.hot_rows} rows, {a.rounds} rounds, order rotated ==",
        )
        say("  -- medians --")
        say(
            f"  {'':<28}{'calls/s':>9}{'goodput':>9}{'non-2xx':>9}{'p95 ms':>8}{'p99 ms':>8}{'CPU us':>8}"
        )
        for name in servers:
            rs = results[name]
            say(
                f"  {name:<28}{median([x['rps'] for x in rs]):>9,.0f}"
                f"{median([x['goodput'] for x in rs]):>9,.0f}{sum(x['non2xx'] for x in rs):>9}"
                f"{median([x['p95_us'] for x in rs]) / 1000:>8.1f}"
                f"{median([x['p99_us'] for x in rs]) / 1000:>8.1f}"
                f"{median([x['cpu_us_per_call'] for x in rs]):>8.0f}"
            )


# -- micro --------------------------------------------------------------------------------


def touch_scope(body: bytes) -> dict[str, Any]:
    """The ASGI scope of `POST /fn/bench.touch` with `body` from 127.0.0.1."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/fn/bench.touch",
        "raw_path": b"/fn/bench.touch",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 1),
        "client": ("127.0.0.1", 2),
        "http_version": "1.1",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


async def per_await_ns(
    fn: Callable[[], Awaitable[object]], n: int = 20_000, repeat: int = 5
) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def micro(a: argparse.Namespace) -> None:
    import json

    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from runtime.config import Settings
    from runtime.context import TxContext
    from runtime.db.documents import _looks_like_uuid, _select_by_id, _update, bind
    from runtime.engine import Runtime, new_request_id
    from runtime.hotkeys import lock_id
    from runtime.http.responses import json_response, valid_request_id
    from runtime.logs import JSONFormatter
    from runtime.plugins import call_first
    from runtime.registry import build_registry
    from runtime.types import CallInfo

    devnull = open("/dev/null", "w")  # noqa: SIM115
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)

    settings = Settings(
        plugins_dir=APP / "plugins",
        functions_dir=APP / "app_functions",
        schema_path=APP / "schema.json",
    )
    runtime = Runtime(settings, "postgresql://unused@/unused")  # pool never opened
    runtime.registry = build_registry(settings.functions_dir, settings.schema_path, 1)
    fn = runtime.lookup("bench.touch", from_http=True)
    table = runtime.registry.tables["tickets"]
    ticket_id = "0b6c3a4e-3f0e-4b8e-9f7c-2d9a6a1e5b11"
    body = json.dumps({"ticket_id": ticket_id}).encode()
    kwargs = runtime.decode_args(fn, body)
    now = datetime.now(UTC)
    scope = {**touch_scope(body), "path_params": {"name": "bench.touch"}}

    def call_info() -> CallInfo:
        return CallInfo(
            request_id="r" * 32,
            function="bench.touch",
            kind="mutation",
            status=200,
            code=None,
            duration_s=0.004,
            attempts=1,
            tenant_id=None,
            user_id=None,
            hot_key_waited=False,
        )

    info = call_info()
    rows: list[tuple[str, float]] = []

    def add(label: str, ns: float) -> None:
        rows.append((label, ns))

    add(
        "request id: valid_request_id + uuid4().hex",
        per_call_ns(lambda: valid_request_id(None) or new_request_id()),
    )
    add("runtime.lookup", per_call_ns(lambda: runtime.lookup("bench.touch", from_http=True)))

    async def async_parts() -> None:
        request = Request(scope)
        add(
            "authenticate: call_first over 1 plugin (bench_admin)",
            await per_await_ns(
                lambda: call_first(
                    runtime.plugins, "authenticate", request=request, runtime=runtime
                )
            ),
        )
        add("authorize (public function)", await per_await_ns(lambda: runtime.authorize(fn, None)))

    asyncio.run(async_parts())
    add(
        "decode_args (msgspec decode + to_kwargs)",
        per_call_ns(lambda: runtime.decode_args(fn, body)),
    )
    add(
        "hot-key key: str(arg) + is_hot",
        per_call_ns(lambda: runtime.hot_keys.is_hot(fn.name, str(kwargs.get(fn.key_arg)))),
    )
    add("hot-key lock_id (blake2b), every call", per_call_ns(lambda: lock_id(fn.name, ticket_id)))
    add("datetime.now(UTC)", per_call_ns(lambda: datetime.now(UTC)))
    extra: dict[str, Any] = {"client_ip": "127.0.0.1"}
    if "tables" in inspect.signature(TxContext).parameters:  # the signature has changed before
        extra["tables"] = runtime.registry.tables
    add(
        "TxContext(...) (LoggerAdapter, getLogger, Database)",
        per_call_ns(
            lambda: TxContext(runtime, fn.name, None, "r" * 32, now, None, 1, False, **extra)
        ),
    )  # type: ignore[arg-type]
    add(
        "ctx.db.get bookkeeping (uuid regex + cached SQL)",
        per_call_ns(lambda: (_looks_like_uuid(ticket_id), _select_by_id("tickets"))),
    )

    def patch_prep() -> object:
        clean = table.validate_document({"touches": 5, "heartbeat_at": now}, partial=True)
        columns = tuple(clean)
        types = tuple(table.column_types[c] for c in columns)
        params = [bind(t, clean[c]) for c, t in zip(columns, types, strict=True)]
        return _looks_like_uuid(ticket_id), _update("tickets", columns, types), params

    add("ctx.db.patch bookkeeping (validate_document + SQL + bind)", per_call_ns(patch_prep))
    add(
        "json_response (msgspec) + 2 headers",
        per_call_ns(
            lambda: json_response(
                {"value": {"touches": 5}},
                headers={"x-request-id": "r" * 32, "x-runtime-attempts": "1"},
            )
        ),
    )
    add(
        "  cf. hand-written JSONResponse (json.dumps)",
        per_call_ns(lambda: JSONResponse({"value": {"touches": 5}})),
    )
    pm = runtime.plugins
    add(
        "CallInfo(...) construction",
        per_call_ns(call_info),
    )
    add(
        "call_finished: call_log + metrics (as shipped)",
        per_call_ns(lambda: runtime.notify_call_finished(info)),
    )
    logging.getLogger("runtime.calls").setLevel(logging.WARNING)
    add(
        "call_finished: call_log quiet + metrics",
        per_call_ns(lambda: runtime.notify_call_finished(info)),
    )
    logging.getLogger("runtime.calls").setLevel(logging.NOTSET)
    pm.unregister(name="default:runtime.defaults.metrics")
    add(
        "call_finished: call_log only (JSON line to /dev/null)",
        per_call_ns(lambda: runtime.notify_call_finished(info)),
    )
    pm.unregister(name="default:runtime.defaults.call_log")
    add(
        "call_finished: no plugins (pluggy dispatch only)",
        per_call_ns(lambda: runtime.notify_call_finished(info)),
    )
    devnull.close()

    say("\n== micro: the runtime's own steps around the SQL, ns per call (best of 5) ==")
    for label, ns in rows:
        say(f"  {label:<58}{ns / 1000:8.2f} us")


# -- asgi (fake database) -----------------------------------------------------------------


class _FakeCursor:
    """Answers the bench SQL instantly: a row for SELECT, rowcount 1 for UPDATE."""

    def __init__(self, row_factory: Any = None) -> None:
        self.rowcount = 0
        self.description = None
        self._row: dict[str, Any] | None = None

    async def execute(self, query: str, params: Any = None, **_: Any) -> _FakeCursor:
        if query.startswith("SELECT * FROM"):
            self._row = dict(_FAKE_ROW)
            self.rowcount = 1
        elif query.startswith("UPDATE"):
            self.rowcount = 1
        return self

    async def fetchone(self) -> dict[str, Any] | None:
        return self._row


class _FakeConn:
    closed = False

    def __init__(self) -> None:
        from psycopg import pq

        self.pgconn = type("PG", (), {"transaction_status": pq.TransactionStatus.IDLE})()

    def cursor(self, row_factory: Any = None) -> _FakeCursor:
        return _FakeCursor(row_factory)

    @property
    def documents(self) -> _FakeCursor:  # RuntimeConnection's reusable cursor
        return _FakeCursor()

    async def execute(self, query: str, params: Any = None, **kw: Any) -> _FakeCursor:
        return await _FakeCursor().execute(query, params)

    async def command(self, statements: bytes) -> None:  # RuntimeConnection's BEGIN/COMMIT
        pass


class _FakePool:
    def __init__(self) -> None:
        self.conn = _FakeConn()

    def connection(self, timeout: float | None = None) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def cm() -> Any:
            yield self.conn

        return cm()

    async def getconn(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (pool API)
        return self.conn

    async def putconn(self, conn: Any) -> None:
        pass

    def get_stats(self) -> dict[str, int]:
        return {}


_FAKE_ROW: dict[str, Any] = {
    "_id": "0b6c3a4e-3f0e-4b8e-9f7c-2d9a6a1e5b11",
    "_creation_time": datetime.now(UTC),
    "tenant_id": "tenant-1",
    "title": "Ticket 1: " + "x" * 50,
    "state": "pending",
    "priority": 1,
    "assignee_id": "agent-1",
    "touches": 5,
    "heartbeat_at": None,
}


def asgi(a: argparse.Namespace) -> None:
    """Both apps driven in-process through ASGI on a fake pool: the Python cost per call
    outside psycopg and the HTTP parser, then cProfile of the runtime's path."""
    import cProfile
    import json
    import pstats

    import benchmarks.handwritten as hw
    from runtime.config import Settings
    from runtime.engine import Runtime
    from runtime.http.app import build_app
    from runtime.logs import JSONFormatter
    from runtime.registry import build_registry

    devnull = open("/dev/null", "w")  # noqa: SIM115
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(JSONFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)

    settings = Settings(
        plugins_dir=APP / "plugins",
        functions_dir=APP / "app_functions",
        schema_path=APP / "schema.json",
    )
    runtime = Runtime(settings, "postgresql://unused@/unused")
    runtime.pool = runtime.transactor.pool = _FakePool()  # type: ignore[assignment]
    runtime.registry = build_registry(settings.functions_dir, settings.schema_path, 1)
    apps: dict[str, Any] = {"runtime (shipped)": build_app(runtime)}
    hw.make_pool = lambda url: _FakePool()  # type: ignore[assignment,return-value]
    apps["hand-written"] = hw.create_app("postgresql://unused@/unused")
    body = json.dumps({"ticket_id": _FAKE_ROW["_id"]}).encode()
    scope = {**touch_scope(body), "asgi": {"version": "3.0"}}

    async def one(app: Any) -> int:
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        return status

    async def timed(app: Any, n: int) -> float:
        assert await one(app) == 200
        start = time.perf_counter_ns()
        for _ in range(n):
            await one(app)
        return (time.perf_counter_ns() - start) / n

    from runtime.context import TxContext

    fn = runtime.lookup("bench.touch", from_http=True)
    kwargs = runtime.decode_args(fn, body)
    fake = _FakeConn()
    tx_extra: dict[str, Any] = {"client_ip": "127.0.0.1"}
    if "tables" in inspect.signature(TxContext).parameters:
        tx_extra["tables"] = runtime.registry.tables

    async def best_of(make: Callable[[], Awaitable[object]]) -> float:
        await make()
        return min([await per_await_ns(make, a.n, 1) for _ in range(a.repeat)])

    async def run() -> dict[str, float]:
        results: dict[str, list[float]] = {k: [] for k in apps}
        for _ in range(a.repeat):  # interleaved
            for label, app in apps.items():
                results[label].append(await timed(app, a.n))
        best = {k: min(v) for k, v in results.items()}
        calls = logging.getLogger("runtime.calls")
        calls.setLevel(logging.WARNING)
        best["runtime, call log quiet"] = min(
            [await timed(apps["runtime (shipped)"], a.n) for _ in range(a.repeat)]
        )
        calls.setLevel(logging.NOTSET)
        pm = runtime.plugins
        removed = [
            (pm.get_plugin(n), n)
            for n in ("default:runtime.defaults.call_log", "default:runtime.defaults.metrics")
        ]
        for _, name in removed:
            pm.unregister(name=name)
        best["runtime, no call_finished"] = min(
            [await timed(apps["runtime (shipped)"], a.n) for _ in range(a.repeat)]
        )
        # the layers, innermost first
        best["  runtime.call(...) (transaction layer + body)"] = await best_of(
            lambda: runtime.call(fn, kwargs, None, "r" * 32, "127.0.0.1")
        )
        best["  body alone: TxContext + bench.touch"] = await best_of(
            lambda: fn.fn(
                TxContext(
                    runtime, fn.name, None, "r" * 32, datetime.now(UTC), fake, 1, False, **tx_extra
                ),
                **kwargs,
            )
        )
        best["  hand-written touch_once alone"] = await best_of(
            lambda: hw.touch_once(fake, _FAKE_ROW["_id"])
        )  # type: ignore[arg-type]
        for plugin, name in removed:
            pm.register(plugin, name=name)
        return best

    best = asyncio.run(run())
    say(
        "\n== asgi: in-process, fake pool (no psycopg, no sockets, no HTTP parsing), "
        f"best of {a.repeat} x {a.n} calls =="
    )
    for label, ns in best.items():
        delta = (
            "" if label.startswith("  ") else f"  ({(ns - best['hand-written']) / 1000:+6.1f} us)"
        )
        say(f"  {label:<48}{ns / 1000:8.1f} us/call{delta}")
    full, call_ = (
        best["runtime, no call_finished"],
        best["  runtime.call(...) (transaction layer + body)"],
    )
    body_, hw_body = (
        best["  body alone: TxContext + bench.touch"],
        best["  hand-written touch_once alone"],
    )
    say(
        f"  => runtime HTTP layer (call_function w/o call_finished): {(full - call_) / 1000:6.1f} us;"
        f" hand-written HTTP handler: {(best['hand-written'] - hw_body) / 1000:6.1f} us"
    )
    say(
        f"  => transaction layer (Transactor + ctx closure): {(call_ - body_) / 1000:6.1f} us;"
        f" body (TxContext + ctx.db): {body_ / 1000:6.1f} us vs hand-written {hw_body / 1000:6.1f} us"
    )
    say(
        f"  => call_finished plugins: {(best['runtime (shipped)'] - full) / 1000:6.1f} us"
        f" (call log line alone: {(best['runtime (shipped)'] - best['runtime, call log quiet']) / 1000:6.1f} us)"
    )

    profiler = cProfile.Profile()

    async def profiled() -> None:
        app = apps["runtime (shipped)"]
        profiler.enable()
        for _ in range(a.n):
            await one(app)
        profiler.disable()

    asyncio.run(profiled())
    out = DATA / "asgi-runtime.prof"
    profiler.dump_stats(out)
    say(f"\n  cProfile of the runtime's path (cumulative, top {a.top}; {out}):")
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, lineno, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((ct, tt, nc, f"{func} ({Path(file).name}:{lineno})"))
    rows.sort(reverse=True)
    for ct, tt, nc, where in rows[: a.top]:
        say(
            f"    cum {ct * 100 / total:5.1f}%  self {tt * 100 / total:5.1f}%  {nc / a.n:5.1f}/call  {where}"
        )
    devnull.close()


# -- py-spy -------------------------------------------------------------------------------

# (bucket, substring of a frame "function (file:line)"); a sample counts once per bucket
BUCKETS: list[tuple[str, str]] = [
    ("uvicorn + starlette (all, inclusive)", "run_asgi (uvicorn/protocols"),
    ("runtime call_function (inclusive)", "call_function (runtime/http/functions.py"),
    ("Transactor.run (inclusive)", "run (runtime/transactions.py"),
    ("psycopg (all statements)", "psycopg/"),
    ("psycopg_pool getconn/putconn", "psycopg_pool/"),
    ("ctx.db.get", "get (runtime/db/documents.py"),
    ("ctx.db.patch", "patch (runtime/db/documents.py"),
    ("validate_document", "validate_document"),
    ("TxContext.__init__", "__init__ (runtime/context.py"),
    ("authenticate (call_first)", "authenticate (runtime/http/functions.py"),
    ("decode_args", "decode_args (runtime/engine.py"),
    ("read_limited_body", "read_limited_body"),
    ("notify_call_finished (pluggy)", "notify_call_finished"),
    ("  call_log plugin", "call_finished (runtime/defaults/call_log.py"),
    ("  metrics plugin", "call_finished (runtime/defaults/metrics.py"),
    ("logging (any)", "logging/__init__.py"),
    ("json_response", "json_response"),
    ("new_request_id", "new_request_id"),
    ("uvicorn response write", "RequestResponseCycle.send"),
    ("hand-written touch (inclusive)", "touch (benchmarks/handwritten.py"),
]


def find_py_spy(explicit: str | None) -> str:
    for candidate in (explicit, shutil.which("py-spy"), str(DATA / "tools" / "bin" / "py-spy")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("py-spy not found: pip install py-spy (or --py-spy PATH)")


def analyse(raw: Path, top: int) -> None:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    for entry in raw.read_text().splitlines():
        stack, _, count_s = entry.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        self_time[frames[-1]] += count
        hit = {bucket for frame in frames for bucket, needle in BUCKETS if needle in frame}
        for bucket in hit:
            inclusive[bucket] += count
    if not total:
        say("  no samples")
        return
    say(f"  {total} samples; inclusive share per bucket:")
    for bucket, _ in BUCKETS:
        if inclusive[bucket]:
            say(f"    {bucket:<40}{inclusive[bucket] * 100 / total:6.1f}%")
    say(f"  top {top} self-time frames:")
    for frame, count in self_time.most_common(top):
        say(f"    {count * 100 / total:5.1f}%  {frame[:150]}")


def spy(a: argparse.Namespace) -> None:
    py_spy = find_py_spy(a.py_spy)
    with servers_stopped() as servers, embedded_postgres() as cluster:
        url = fresh_database(cluster, DATABASE)
        servers["runtime"] = start_runtime(url, "unused")
        ids_file, _ = seed(url, a.rows, 10)
        servers["handwritten"] = start_handwritten(url)
        targets = ["runtime", "handwritten"] if a.target == "both" else [a.target]
        for name in targets:
            server = servers[name]
            measure(
                server,
                "/fn/bench.touch",
                LUA_DIR / "ids.lua",
                connections=a.connections,
                duration=3,
                threads=1,
                script_args=[str(ids_file)],
            )
            raw = DATA / f"profile-{name}.txt"
            argv = [
                py_spy,
                "record",
                "--format",
                "raw",
                "-o",
                str(raw),
                "-r",
                str(a.rate),
                "-d",
                str(int(a.seconds)),
                "-p",
                str(server.pid),
            ]
            spy_proc = subprocess.Popen(
                argv + (["--gil"] if a.gil else []),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                r = measure(
                    server,
                    "/fn/bench.touch",
                    LUA_DIR / "ids.lua",
                    connections=a.connections,
                    duration=a.seconds,
                    threads=1,
                    script_args=[str(ids_file)],
                )
                spy_proc.wait(timeout=a.seconds + 30)
            finally:
                if spy_proc.poll() is None:
                    spy_proc.terminate()
                    spy_proc.wait(10)
            say(
                f"\n== {name}: {r['rps']:,.0f} calls/s under py-spy{' --gil' if a.gil else ''}, "
                f"{r['cpu_us_per_call']:.0f} us CPU/call; stacks in {raw} =="
            )
            analyse(raw, a.top)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.profile_calls", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    abl = sub.add_parser("ablation")
    abl.add_argument("--rounds", type=int, default=3)
    abl.add_argument("--duration", type=float, default=10.0)
    abl.add_argument("--warmup", type=float, default=3.0)
    ht = sub.add_parser("hot")
    ht.add_argument("--rounds", type=int, default=2)
    ht.add_argument("--duration", type=float, default=10.0)
    ht.add_argument("--warmup", type=float, default=2.0)
    ht.add_argument("--hot-rows", type=int, default=10)
    sub.add_parser("micro")
    ag = sub.add_parser("asgi")
    ag.add_argument("--n", type=int, default=5000)
    ag.add_argument("--repeat", type=int, default=5)
    ag.add_argument("--top", type=int, default=45)
    sp = sub.add_parser("spy")
    sp.add_argument("--seconds", type=float, default=15.0)
    sp.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    sp.add_argument("--target", choices=("runtime", "handwritten", "both"), default="both")
    sp.add_argument("--top", type=int, default=25)
    sp.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    sp.add_argument("--py-spy")
    ht.add_argument("--connections", type=int, default=64)
    ht.add_argument("--rows", type=int, default=100_000)
    for q in (abl, sp):
        q.add_argument("--connections", type=int, default=16)
        q.add_argument("--rows", type=int, default=100_000)
    a = p.parse_args(argv)
    {"ablation": ablation, "hot": hot, "micro": micro, "asgi": asgi, "spy": spy}[a.command](a)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
