"""Hot reload: from a file write to the first response served by the new code, under load.

    python -m benchmarks.bench_reload [--edits 50] [--block 10] [--connections 8] [--pause-ms 2]
    make bench-reload ARGS="--edits 100"

One run, side by side, on one embedded PostgreSQL (.runtime/bench/pg, fsync off, database
`bench_reload`), each server with its own scratch copy of a one-function app under
.runtime/bench/reload/<server>/ (app_functions/probe.py + schema.json):

  A  `swarm-runtime serve --reload --workers 1` (the runtime's own reloader: build the new
     registry off to the side, swap one reference, keep the process and its connections);
  B  `uvicorn --factory runtime.http.app:app_from_env --reload --reload-dir <app_functions>`
     (the same runtime, restarted as a process by uvicorn on every change): the baseline.

`probe.marker` is a public query that returns a marker string; every edit rewrites probe.py in
place (open/truncate/write, as most editors save) with the next marker, same file size. After
the write returns, a probe on its own keep-alive connection polls POST /fn/probe.marker in a
tight loop (0.2 ms sleeps, reconnecting on errors) and timestamps the first response carrying
the new marker: that is the edit's latency. Meanwhile wrk keeps `--connections` keep-alive
connections busy on the same function (`--pause-ms` between a connection's requests) and
counts what fails: non-2xx answers, requests lost on open connections (read/write errors,
timeouts), and refused connects while the server is down.

Edits go in blocks of `--block`, alternating servers (A B, B A, ...), one wrk per block against
the server being edited; a block waits `--settle-ms` after each edit's new code is seen before
the next edit. Prints p50/p95/max latency and the failures per server; goals for the runtime:
p95 <= 50 ms and zero failed requests.
"""

# ruff: noqa: E501  (report lines and SQL read better unwrapped)
from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import (
    BENCH_DIR,
    DATA,
    LUA_DIR,
    VENV_BIN,
    Server,
    admin_token,
    embedded_postgres,
    free_port,
    fresh_database,
    median,
    parse_wrk,
    percentile,
    runtime_status,
    say,
    time_limit,
    wrk_argv,
    wrk_binary,
)

DATABASE = "bench_reload"
PLUGINS = BENCH_DIR / "app" / "plugins"  # bench_admin: lets us read /_runtime/status
SCHEMA = {
    "tables": {},
    "functions": {
        "probe.marker": {
            "description": "Returns the marker of the code version serving (bench_reload).",
            "args": {"type": "object", "additionalProperties": False, "properties": {}},
            "returns": {"type": "string"},
        }
    },
}
PROBE = '''"""Rewritten by benchmarks/bench_reload.py on every edit."""

from runtime import query


@query(public=True)
async def marker(ctx):
    return "{marker}"
'''


def marker_for(n: int) -> str:
    return f"edit-{n:06d}"  # same length every time: the file's size never changes


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.bench_reload", description=__doc__.split("\n")[0])
    p.add_argument("--edits", type=int, default=50, help="edits per server (50)")
    p.add_argument(
        "--block", type=int, default=10, help="edits per block; blocks alternate servers"
    )
    p.add_argument("--connections", type=int, default=8, help="wrk keep-alive connections (8)")
    p.add_argument("--pause-ms", type=int, default=2, help="pause between a connection's requests")
    p.add_argument("--settle-ms", type=int, default=200, help="wait after new code is seen")
    p.add_argument("--edit-timeout", type=float, default=5.0, help="give up on one edit after (s)")
    p.add_argument(
        "--no-bytecode",
        action="store_true",
        help="servers run with PYTHONDONTWRITEBYTECODE=1 (default: Python's default, "
        "__pycache__ written)",
    )
    p.add_argument("--only", choices=("runtime", "uvicorn"), help="measure one server only")
    p.add_argument(
        "--compare-knobs",
        metavar="KNOBS",
        default="",
        help="also measure a runtime with BENCH_KNOBS=KNOBS (experiments, e.g. "
        "watch_step_2ms; see benchmarks/app/plugins/bench_knobs.py)",
    )
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--max-minutes", type=float, default=20.0, help="hard bound on the whole run")
    return p.parse_args(argv)


# -- the probe ------------------------------------------------------------------------------


class Probe:
    """A minimal HTTP/1.1 keep-alive client on a raw socket (microseconds per poll, no pool)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.request = (
            f"POST /fn/probe.marker HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        ).encode()
        self.errors = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def marker(self) -> str | None:
        """The marker served now, or None (and a reconnect next time) on any failure."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(self.request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            length = next(
                (
                    int(v)
                    for k, _, v in (h.partition(b":") for h in lines[1:])
                    if k.strip().lower() == b"content-length"
                ),
                0,
            )
            while len(body) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                body += chunk
            if any(h.lower() == b"connection: close" for h in lines[1:]):
                self.close()
            if status != 200:
                self.errors += 1
                return None
            value: str = json.loads(body[:length])["value"]
            return value
        except (OSError, ValueError, KeyError, IndexError):
            self.errors += 1
            self.close()
            return None


# -- the servers ------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    home: Path
    server: Server | None = None
    edits: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    missed: int = 0  # edits whose new code was never seen within --edit-timeout
    wrk: list[dict[str, Any]] = field(default_factory=list)
    probe_errors: int = 0
    written_at: list[float] = field(default_factory=list)  # wall clock of each write
    served_at: list[float | None] = field(default_factory=list)  # first new response

    @property
    def functions(self) -> Path:
        return self.home / "app_functions"

    @property
    def probe_file(self) -> Path:
        return self.functions / "probe.py"

    def prepare(self) -> None:
        self.functions.mkdir(parents=True, exist_ok=True)
        for stale in self.functions.glob("*.py"):
            stale.unlink()
        (self.home / "schema.json").write_text(json.dumps(SCHEMA, indent=2) + "\n")
        self.probe_file.write_text(PROBE.format(marker=marker_for(0)))


def runtime_env(
    url: str, target: Target, token: str, no_bytecode: bool, knobs: str = ""
) -> dict[str, str | None]:
    return {
        # Python's default writes __pycache__/*.pyc; this environment may have turned it off
        "PYTHONDONTWRITEBYTECODE": "1" if no_bytecode else None,
        "DATABASE_URL": url,
        "RUNTIME_FUNCTIONS": str(target.functions),
        "RUNTIME_SCHEMA": str(target.home / "schema.json"),
        "RUNTIME_PLUGINS": str(PLUGINS),
        "RUNTIME_DATA": str(target.home / "data"),
        "RUNTIME_DEV": "0",
        "RUNTIME_RELOAD": "0",
        "RUNTIME_LOG_FORMAT": "json",
        "BENCH_ADMIN_TOKEN": token,
        "BENCH_KNOBS": knobs,
    }


def start_runtime(
    url: str,
    target: Target,
    token: str,
    no_bytecode: bool,
    knobs: str = "",
    name: str = "runtime",
) -> Server:
    port = free_port()
    server = Server(
        f"reload-{name}",
        [
            VENV_BIN / "swarm-runtime",
            "serve",
            "--reload",
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        port,
        env=runtime_env(url, target, token, no_bytecode, knobs),
    )
    server.wait_ready("/readyz")
    return server


def start_uvicorn(url: str, target: Target, token: str, no_bytecode: bool) -> Server:
    port = free_port()
    server = Server(
        "reload-uvicorn",
        [
            VENV_BIN / "python",
            "-m",
            "uvicorn",
            "--factory",
            "runtime.http.app:app_from_env",
            "--reload",
            "--reload-dir",
            target.functions,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        port,
        env=runtime_env(url, target, token, no_bytecode),
    )
    server.wait_ready("/readyz")
    return server


# -- one block ----------------------------------------------------------------------------------


def run_block(target: Target, edits: int, a: argparse.Namespace) -> None:
    assert target.server is not None
    server = target.server
    argv = wrk_argv(
        server.base + "/fn/probe.marker",
        LUA_DIR / "marker.lua",
        connections=a.connections,
        duration_s=3600,
        timeout_s=5,
        script_args=[str(a.pause_ms)],
    )
    wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probe = Probe(server.port)
    try:
        time.sleep(0.5)  # every wrk connection open and busy before the first edit
        current = probe.marker()
        for _ in range(edits):
            target.edits += 1
            new = marker_for(target.edits)
            assert new != current
            text = PROBE.format(marker=new)
            with open(target.probe_file, "w") as handle:  # in place, as editors save
                handle.write(text)
            written = time.perf_counter()
            target.written_at.append(time.time())
            deadline = written + a.edit_timeout
            seen = None
            while time.perf_counter() < deadline:
                seen = probe.marker()
                if seen == new:
                    break
                time.sleep(0.0002)
            if seen == new:
                target.latencies_ms.append((time.perf_counter() - written) * 1000)
                target.served_at.append(time.time())
            else:
                target.served_at.append(None)
                target.missed += 1
                say(
                    f"  {target.name}: edit {target.edits} not served within {a.edit_timeout:.0f} s "
                    f"(still {seen!r})"
                )
            current = new
            time.sleep(a.settle_ms / 1000)
    finally:
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        try:
            out, _ = wrk.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            wrk.kill()
            out, _ = wrk.communicate()
        probe.close()
        target.probe_errors += probe.errors
    target.wrk.append(parse_wrk(out))


# -- the run ------------------------------------------------------------------------------------


def reload_breakdown(t: Target) -> dict[str, list[float]] | None:
    """For the runtime: split each edit's latency using its own log lines ("reloaded in X ms",
    stamped when the swap is done): write -> batch handed to the reloader (the watcher), the
    reload itself (build + swap), swap -> first new response seen by the probe."""
    if t.server is None:
        return None
    done: list[tuple[float, float]] = []
    for entry in t.server.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(entry)
        except ValueError:
            continue
        msg = record.get("msg", "")
        if record.get("logger") == "runtime.reload" and msg.startswith("reloaded in "):
            stamp = datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            done.append((stamp.timestamp(), float(msg.split()[2])))
    if len(done) != len(t.written_at):
        say(f"  ({len(done)} reloads logged for {len(t.written_at)} edits: no breakdown)")
        return None
    out: dict[str, list[float]] = {"watcher": [], "reload": [], "to_response": []}
    for written, served, (end, took) in zip(t.written_at, t.served_at, done, strict=True):
        out["watcher"].append((end - took / 1000 - written) * 1000)
        out["reload"].append(took)
        if served is not None:
            out["to_response"].append((served - end) * 1000)
    return out


def summarize(t: Target) -> dict[str, Any]:
    lat = t.latencies_ms
    totals = {
        k: sum(r[k] for r in t.wrk)
        for k in ("requests", "non2xx", "connect", "read", "write", "timeout")
    }
    seconds = sum(r["seconds"] for r in t.wrk)
    lost = totals["read"] + totals["write"] + totals["timeout"]
    return {
        "edits": t.edits,
        "seen": len(lat),
        "missed": t.missed,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "max_ms": max(lat) if lat else float("nan"),
        "min_ms": min(lat) if lat else float("nan"),
        "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
        "requests": totals["requests"],
        "rps": totals["requests"] / seconds if seconds else 0.0,
        "non2xx": totals["non2xx"],
        "lost_on_open_connections": lost,
        "refused_connects": totals["connect"],
        "failed": totals["non2xx"] + lost + totals["connect"],
        "probe_errors": t.probe_errors,
        "latencies_ms": lat,
    }


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    wrk_binary()
    token = admin_token()
    names = [a.only] if a.only else ["runtime", "uvicorn"]
    if a.compare_knobs:
        names.append("runtime+knobs")
    targets = {n: Target(n, DATA / "reload" / n.replace("+", "-")) for n in names}
    try:
        with time_limit(a.max_minutes), embedded_postgres() as cluster:
            url = fresh_database(cluster, DATABASE)
            for t in targets.values():
                t.prepare()
                if t.name == "uvicorn":
                    t.server = start_uvicorn(url, t, token, a.no_bytecode)
                else:
                    knobs = a.compare_knobs if t.name == "runtime+knobs" else ""
                    t.server = start_runtime(url, t, token, a.no_bytecode, knobs, t.name)
                say(f"{t.name:<8} pid {t.server.pid}  {t.server.base}  watching {t.functions}")
            say(
                f"\n== {a.edits} edits per server, blocks of {a.block}, alternating; load: wrk -t1 "
                f"-c{a.connections} with {a.pause_ms} ms pauses on POST /fn/probe.marker; servers "
                f"{'do not write' if a.no_bytecode else 'write'} __pycache__ =="
            )
            blocks = (a.edits + a.block - 1) // a.block
            for b in range(blocks):
                order = names if b % 2 == 0 else names[::-1]
                for name in order:
                    t = targets[name]
                    n = min(a.block, a.edits - t.edits)
                    if n <= 0:
                        continue
                    before = len(t.latencies_ms)
                    run_block(t, n, a)
                    lat = t.latencies_ms[before:]
                    w = t.wrk[-1]
                    say(
                        f"  block {b + 1} {name:<13} {n} edits: median {median(lat):7.1f} ms, "
                        f"max {max(lat) if lat else float('nan'):7.1f} ms | load {w['requests']:>6} req, "
                        f"non-2xx {w['non2xx']}, lost {w['read'] + w['write'] + w['timeout']}, "
                        f"refused {w['connect']}"
                    )
                    if t.server is not None and t.server.proc.poll() is not None:
                        raise RuntimeError(f"{name} died:\n{t.server.tail()}")
            status = None
            if "runtime" in targets and targets["runtime"].server is not None:
                status = runtime_status(targets["runtime"].server, token)
    finally:
        for t in targets.values():
            if t.server is not None:
                t.server.stop()

    results = {n: summarize(t) for n, t in targets.items()}
    say("\n== results: file write -> first response from the new code ==")
    say(
        f"  {'':<14}{'edits':>6}{'missed':>7}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
        f"{'load req':>10}{'non-2xx':>8}{'lost':>6}{'refused':>8}{'probe err':>10}"
    )
    for n, r in results.items():
        say(
            f"  {n:<14}{r['edits']:>6}{r['missed']:>7}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
            f"{r['max_ms']:>9.1f}{r['requests']:>10}{r['non2xx']:>8}{r['lost_on_open_connections']:>6}"
            f"{r['refused_connects']:>8}{r['probe_errors']:>10}"
        )
    say(
        "  lost = requests on open keep-alive connections that got no answer (read/write errors,"
        " timeouts);\n  refused = connects refused while the server was down; both counted by wrk."
    )
    if "runtime" in results and "uvicorn" in results:
        rt, uv = results["runtime"], results["uvicorn"]
        say(
            f"  uvicorn --reload / runtime: p50 {uv['p50_ms'] / rt['p50_ms']:.0f}x, "
            f"p95 {uv['p95_ms'] / rt['p95_ms']:.0f}x slower"
        )
    for rname in [n for n in targets if n.startswith("runtime")]:
        parts = reload_breakdown(targets[rname])
        if parts:
            say(
                f"\n  {rname}, where an edit's time goes (from its log lines; ts have 1 ms resolution):"
            )
            for key, label in (
                ("watcher", "write -> batch reaches the reloader (inotify, debounce)"),
                ("reload", "reload: build registry + swap"),
                ("to_response", "swap -> first new response at the probe"),
            ):
                vals = parts[key]
                say(
                    f"    {label:<58} p50 {percentile(vals, 50):6.1f}  p95 {percentile(vals, 95):6.1f}"
                    f"  max {max(vals):6.1f} ms"
                )
            results[rname]["breakdown_ms"] = parts
    if status is not None:
        last = (status.get("reload") or {}).get("last") or {}
        say(
            f"\n  runtime /_runtime/status reload: {status['reload'].get('reloads')} ok reloads "
            f"recorded (last 20 kept), last took {last.get('duration_ms', float('nan')):.1f} ms "
            f"in-process (build + swap), version {status['reload'].get('serving_version')}"
        )
    ok = True
    if "runtime" in results:
        rt = results["runtime"]
        ok = (
            rt["p95_ms"] <= 50
            and rt["failed"] == 0
            and rt["missed"] == 0
            and rt["probe_errors"] == 0
        )
        say(f"  goal runtime p95 <= 50 ms and zero failed requests: {'met' if ok else 'NOT met'}")
        if rt["missed"]:
            say(
                f"  ! {rt['missed']} edit(s) never served: the reload ran (see the log: '~0 changed') "
                "but imported the previous\n    __pycache__ bytecode, whose mtime (whole seconds) and "
                "size matched the edited file"
            )
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(a).items()},
                    "results": results,
                    "status": status,
                },
                indent=2,
                default=str,
            )
        )
        say(f"\nwrote {a.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
