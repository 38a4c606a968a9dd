"""What the benchmarks share: the embedded cluster, server processes, wrk, the run's time
limit and admin token, and small stats.

Everything here is bounded in time and only ever signals processes this module started (by
their PID, or the process group it created for them); every server listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
DATA = ROOT / ".runtime" / "bench"  # embedded cluster, logs, scratch apps (git-ignored)
VENV_BIN = Path(sys.executable).parent
LUA_DIR = BENCH_DIR / "lua"


def say(message: str = "") -> None:
    print(message, flush=True)


# -- PostgreSQL ---------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_postgres() -> Iterator[Any]:
    """The benchmark's own cluster in .runtime/bench/pg (fsync off); stopped on exit."""
    from runtime.embedded_pg import EmbeddedPostgres

    cluster = EmbeddedPostgres(DATA / "pg", fsync=False, log=lambda m: say(f"  [pg] {m}"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def fresh_database(cluster: Any, name: str) -> str:
    """Drop (forcibly) and create database `name`; its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(cluster.url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    return str(cluster.create_database(name))


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (Linux /proc), in seconds; 0.0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _environment(changes: dict[str, str | None] | None) -> dict[str, str]:
    """os.environ with `changes` applied; a None value removes the variable."""
    env = dict(os.environ)
    for key, value in (changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Server:
    """A server subprocess in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        port: int,
        env: dict[str, str | None] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        DATA.mkdir(parents=True, exist_ok=True)
        self.log_path = DATA / f"{name}.log"
        self._stopped = False
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd,
            env=_environment(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: uvicorn --reload's child goes with it
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str = "/healthz", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.base + path).status_code == 200:
                        return
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGINT, then SIGKILL to the group this server was started in."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGINT, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # the group we created (uvicorn --reload's worker, a multiprocessing helper...)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5.0)
        self._log.close()


@contextlib.contextmanager
def servers_stopped() -> Iterator[dict[str, Server]]:
    """A dict to put the servers a run starts in; every one of them is stopped on exit."""
    servers: dict[str, Server] = {}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# -- the run ------------------------------------------------------------------------------


@contextlib.contextmanager
def time_limit(minutes: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after `minutes` (SIGALRM); cancelled on exit."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError("benchmark exceeded --max-minutes")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(int(minutes * 60))
    try:
        yield
    finally:
        signal.alarm(0)


def admin_token() -> str:
    """A random token for this run: the servers get it as BENCH_ADMIN_TOKEN
    (benchmarks/app/plugins/bench_admin.py), and `runtime_status` sends it."""
    return "bench_" + secrets.token_urlsafe(24)


def runtime_status(server: Server, token: str) -> dict[str, Any]:
    """The runtime's `GET /_runtime/status`, as the benchmark's admin."""
    status: dict[str, Any] = httpx.get(
        server.base + "/_runtime/status",
        headers={"authorization": f"Bearer {token}"},
        timeout=5,
    ).json()
    return status


# -- wrk ----------------------------------------------------------------------------------


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "wrk is not installed: `sudo apt-get install wrk` (make bench does it as root)"
        )
    return path


def parse_wrk(stdout: str) -> dict[str, Any]:
    """The JSON line our Lua done() hook prints (prefixed WRKJSON)."""
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            data: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            seconds = data["duration_us"] / 1e6
            failed = data["non2xx"] + data["socket_errors"]
            data["seconds"] = seconds
            data["rps"] = data["requests"] / seconds if seconds else 0.0
            data["goodput"] = (
                max(data["requests"] - data["non2xx"], 0) / seconds if seconds else 0.0
            )
            data["failed"] = failed
            return data
    raise RuntimeError(f"no WRKJSON line in wrk's output:\n{stdout}")


def wrk_argv(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 5.0,
    script_args: Sequence[str] = (),
) -> list[str]:
    return [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(round(duration_s), 1)}s",
        f"--timeout={int(timeout_s)}s",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
    ]


def run_wrk(argv: list[str], duration_s: float) -> dict[str, Any]:
    """Run wrk to completion (bounded: duration + 30 s) and parse its numbers."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    result["raw"] = done.stdout
    return result


# -- numbers ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return float(ordered[rank - 1])


def per_call_ns(fn: Callable[[], object], n: int = 20_000, repeat: int = 5) -> float:
    """Best of `repeat` runs of `n` calls, in nanoseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def ms(us: float) -> str:
    return f"{us / 1000:.2f}"
