"""`swarm-runtime loadtest`: run the Locust suite headless and print the go/no-go verdict.

Without `--host` it measures a runtime it starts itself (runtime/loadtest/harness.py); with
`--host` a deployed one, with the credentials of the SWARM_LT_* environment variables
(loadtests/swarm_load/config.py). Locust runs as a subprocess on `loadtests/locustfile.py`,
under `nice` so the server gets the CPU first; the report (Locust's CSV files and HTML page,
the server's log) goes to `loadtests/reports/<UTC time>/`. Exit code: 0 go, 1 no-go, 2 the
test could not run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.cli.options import settings_from_args

if TYPE_CHECKING:  # imported lazily: the CLI starts without Locust's dependencies
    from runtime.loadtest.cpu import CpuFigure
    from runtime.loadtest.harness import Credentials, LocalRuntime

DEFAULT_USERS = 40
DEFAULT_SPAWN_RATE = 10.0
DEFAULT_DURATION = "60s"
LOCUST_NICE = 10
BUSY_GENERATOR_PERCENT = 70.0  # of one core: above it, Locust may be what limits the figures
BUSY_MACHINE_PERCENT = 30.0  # of one core used by processes outside the test: a shared machine


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "loadtest",
        help="run the Locust suite headless and print a go/no-go verdict (exit 1 on no-go)",
        description=(
            "Run loadtests/locustfile.py headless for a bounded time and user count, against "
            "a runtime started for the purpose on the embedded PostgreSQL (seeded with the "
            "demo data), or against --host. Prints p95, p99, error rate and requests/s per "
            "endpoint and overall, the CPU used by Locust, the server and PostgreSQL, and "
            "the verdict; writes Locust's CSV and HTML report to loadtests/reports/<time>/."
        ),
    )
    parser.add_argument(
        "--users",
        type=int,
        default=DEFAULT_USERS,
        help=f"simulated users (default {DEFAULT_USERS})",
    )
    parser.add_argument(
        "--spawn-rate",
        type=float,
        default=DEFAULT_SPAWN_RATE,
        help=f"users started per second (default {DEFAULT_SPAWN_RATE:g})",
    )
    parser.add_argument(
        "--duration",
        default=DEFAULT_DURATION,
        help=f"how long: 45, 90s, 5m (default {DEFAULT_DURATION})",
    )
    parser.add_argument(
        "--p95-ms",
        type=float,
        default=100.0,
        help="go needs p95 below this, per endpoint and overall (default 100)",
    )
    parser.add_argument(
        "--max-error-rate",
        type=_rate,
        default=0.01,
        help="go needs an error rate below this: 0.01 or 1%% (default 1%%)",
    )
    parser.add_argument(
        "--host",
        help="a deployed runtime, e.g. https://staging.example.com "
        "(credentials: SWARM_LT_* variables, see docs/operations.md)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serve's worker processes when no --host is given (default 1)",
    )
    parser.add_argument(
        "--tenant",
        action="append",
        dest="tenants",
        metavar="TENANT",
        help="tenants to seed and load (repeatable; default acme and globex)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="where the embedded PostgreSQL of the test lives (default $RUNTIME_DATA/loadtest)",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=Path("loadtests/reports"),
        help="report folder (default loadtests/reports)",
    )
    parser.add_argument("--locustfile", type=Path, default=Path("loadtests/locustfile.py"))
    parser.add_argument(
        "--locust-cpus",
        metavar="LIST",
        help="pin Locust to these CPUs with taskset, e.g. 1 (default: not pinned)",
    )
    parser.add_argument("--functions", type=Path, help="app functions of the runtime under test")
    parser.add_argument("--schema", type=Path, help="schema.json of the runtime under test")
    parser.add_argument("--plugins", type=Path, help="plugins of the runtime under test")
    parser.set_defaults(handler=run)


def _rate(text: str) -> float:
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("an error rate between 0 and 1 (or 0% and 100%)")
    return value


def parse_duration(text: str) -> int:
    found = re.fullmatch(r"(\d+)\s*(s|m|h)?", text.strip())
    if not found or int(found.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (try 45, 90s or 5m)")
    return int(found.group(1)) * {"s": 1, "m": 60, "h": 3600}[found.group(2) or "s"]


def _say(message: str) -> None:
    print(f"loadtest: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from runtime.loadtest.harness import HarnessError, LocalRuntime

    try:
        duration_s = parse_duration(args.duration)
    except ValueError as exc:
        _say(str(exc))
        return 2
    if args.users < 1 or args.spawn_rate <= 0:
        _say("--users and --spawn-rate must be positive")
        return 2
    locustfile = args.locustfile.absolute()
    if not locustfile.is_file():
        _say(f"{args.locustfile} not found (run from the repository root, or pass --locustfile)")
        return 2
    if not _has_locust():
        _say("Locust is not installed: pip install -e '.[dev]'")
        return 2
    tenants = args.tenants or ["acme", "globex"]
    report_dir = args.reports / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    report_dir.mkdir(parents=True, exist_ok=True)

    local: LocalRuntime | None = None
    try:
        if args.host:
            url = args.host.rstrip("/")
            try:
                creds = _remote_credentials(tenants)
            except ValueError as exc:
                _say(str(exc))
                return 2
        else:
            settings = settings_from_args(args)
            app_args = []
            for flag in ("functions", "schema", "plugins"):
                if getattr(args, flag) is not None:
                    app_args += [f"--{flag}", str(getattr(args, flag).absolute())]
            local = LocalRuntime(
                data_dir=args.data or settings.data_dir / "loadtest",
                report_dir=report_dir,
                tenants=tenants,
                agent_keys=max(1, args.users),
                workers=args.workers,
                app_args=app_args,
                say=_say,
            )
            creds = local.start()
            url = local.url
        code, cpu = _run_locust(args, locustfile, url, creds, report_dir, duration_s, local)
    except HarnessError as exc:
        _say(str(exc))
        return 2
    finally:
        if local is not None:
            local.stop()
    return _report(args, report_dir, code, cpu)


def _has_locust() -> bool:
    import importlib.util

    return importlib.util.find_spec("locust") is not None


def _remote_credentials(tenants: list[str]) -> Credentials:
    from runtime.loadtest.harness import Credentials, sign_people_tokens

    def listed(name: str) -> list[str]:
        return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]

    creds = Credentials(
        agent_keys=listed("SWARM_LT_AGENT_KEYS"),
        viewer_tokens=listed("SWARM_LT_VIEWER_TOKENS"),
        operator_tokens=listed("SWARM_LT_OPERATOR_TOKENS"),
        webhook_secret=os.environ.get("SWARM_LT_WEBHOOK_SECRET", ""),
    )
    if not (creds.viewer_tokens and creds.operator_tokens) and os.environ.get("RUNTIME_JWT_SECRET"):
        signed = sign_people_tokens(tenants)  # the deployment's secret: sign them here
        creds.viewer_tokens = creds.viewer_tokens or signed.viewer_tokens
        creds.operator_tokens = creds.operator_tokens or signed.operator_tokens
    missing = [
        name
        for name, value in (
            ("SWARM_LT_AGENT_KEYS", creds.agent_keys),
            ("SWARM_LT_VIEWER_TOKENS (or RUNTIME_JWT_SECRET)", creds.viewer_tokens),
            ("SWARM_LT_OPERATOR_TOKENS (or RUNTIME_JWT_SECRET)", creds.operator_tokens),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"--host needs credentials in the environment: {', '.join(missing)}")
    if not creds.webhook_secret:
        _say("SWARM_LT_WEBHOOK_SECRET is not set: no GitHub deliveries in this run")
    return creds


def _run_locust(
    args: argparse.Namespace,
    locustfile: Path,
    url: str,
    creds: Credentials,
    report_dir: Path,
    duration_s: int,
    local: LocalRuntime | None,
) -> tuple[int, dict[str, CpuFigure]]:
    from runtime.loadtest.cpu import CpuSampler

    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        f"{args.spawn_rate:g}",
        "--run-time",
        f"{duration_s}s",
        "--stop-timeout",
        "10",
        "--host",
        url,
        "--csv",
        str(report_dir / "locust"),
        "--html",
        str(report_dir / "report.html"),
        "--only-summary",
        "--loglevel",
        "INFO",
        "--p95-ms",
        f"{args.p95_ms:g}",
        "--max-error-rate",
        f"{args.max_error_rate:g}",
    ]
    if shutil.which("nice"):
        command = ["nice", "-n", str(LOCUST_NICE), *command]
    if args.locust_cpus and shutil.which("taskset"):
        command = ["taskset", "-c", args.locust_cpus, *command]
    env = {**os.environ, **creds.env()}
    target = "a runtime started for the test" if local is not None else url
    _say(
        f"Locust: {args.users} users (spawning {args.spawn_rate:g}/s) for {duration_s} s "
        f"against {target}; report in {report_dir}/"
    )
    with (report_dir / "locust.log").open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    roots = {"locust": proc.pid}
    if local is not None and local.server is not None:
        roots |= {"server": local.server.pid, "postgres": local.postgres_pid or 0}
    with CpuSampler(roots) as sampler:
        try:
            code = proc.wait(timeout=duration_s + 120)
        except subprocess.TimeoutExpired:
            _say("Locust did not stop in time; stopping it")
            proc.send_signal(signal.SIGTERM)
            time.sleep(5)
            proc.kill()
            proc.wait()
            code = 2
    return code, sampler.figures


def _report(
    args: argparse.Namespace, report_dir: Path, code: int, cpu: dict[str, CpuFigure]
) -> int:
    from runtime.loadtest.report import read_stats, server_side, table, verdict

    log = report_dir / "locust.log"
    prefix = report_dir / "locust"
    if code not in (0, 1) or not Path(f"{prefix}_stats.csv").exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
        _say(f"Locust failed (exit {code}); the last lines of {log}:\n{tail}")
        return 2
    stats = read_stats(prefix)
    notes = []
    locust_cpu = cpu.get("locust")
    if locust_cpu is not None and locust_cpu.percent > BUSY_GENERATOR_PERCENT:
        notes.append(
            f"Locust used {locust_cpu.percent:.0f}% of a core: the figures may be limited by "
            "the load generator; use fewer users, or run Locust on another machine (--host)"
        )
    other = cpu.get("other")
    if other is not None and other.percent > BUSY_MACHINE_PERCENT:
        notes.append(
            f"other processes used {other.percent:.0f}% of a core during the run: latencies "
            "include waiting for the CPU; rerun on a quiet machine for the runtime's own figures"
        )
    server = server_side(report_dir / "server.log")
    if server is not None:
        notes.append(server)
    if code == 1 and not verdict(stats, args.p95_ms, args.max_error_rate):
        notes.append(f"Locust's own gate said no-go (e.g. errors in the users' code): see {log}")
    print(table(stats, args.p95_ms, args.max_error_rate, cpu, notes))
    print(f"\nreport: {report_dir}/ (report.html, locust_stats.csv, locust.log)", flush=True)
    go = code == 0 and not verdict(stats, args.p95_ms, args.max_error_rate)
    return 0 if go else 1
