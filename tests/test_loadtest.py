"""`swarm-runtime loadtest` end to end: a short run against the real app is GO (exit 0) and
writes the report; the same run with one deliberately slow function is NO-GO (exit 1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.loadtest.cpu import CpuFigure
from runtime.loadtest.report import read_stats, table, verdict

REPO = Path(__file__).resolve().parent.parent

# Appended to a copy of app_functions/tickets.py: every claim takes 400 ms longer.
SLOW_CLAIMS = """

import asyncio as _asyncio
import functools as _functools


def _slowed(fn):
    @_functools.wraps(fn)  # keeps the function's declaration and signature
    async def slow(ctx, *args, **kwargs):
        await _asyncio.sleep(0.4)
        return await fn(ctx, *args, **kwargs)

    return slow


claim_next = _slowed(claim_next)
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded cluster for the module's runs (initdb once)."""
    return tmp_path_factory.mktemp("loadtest-data")


def loadtest(*args: str, reports: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWARM_LT_", "DATABASE_URL"))}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "loadtest",
            "--duration",
            "8s",
            "--users",
            "6",
            "--spawn-rate",
            "6",
            "--data",
            str(data_dir),
            "--reports",
            str(reports),
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


@pytest.mark.slow
def test_a_healthy_run_is_go(tmp_path: Path, data_dir: Path) -> None:
    # a generous p95 limit: this checks the plumbing, not this machine's speed
    done = loadtest("--p95-ms", "2000", reports=tmp_path, data_dir=data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VERDICT: GO" in done.stdout
    for row in ("POST /agent/claim", "POST /fn/tickets.claim_next", "Aggregated"):
        assert row in done.stdout
    for side in ("locust", "server", "postgres"):
        assert f"  {side} " in done.stdout, f"CPU of {side} is reported"
    (report,) = tmp_path.iterdir()
    for name in ("locust_stats.csv", "locust_failures.csv", "report.html", "server.log"):
        assert (report / name).is_file(), name
    stats = read_stats(report / "locust")
    assert stats.total.requests > 20 and stats.total.failures == 0
    assert any(r.name.startswith("POST /webhooks/github") for r in stats.rows)


@pytest.mark.slow
def test_a_slow_function_is_no_go(tmp_path: Path, data_dir: Path) -> None:
    functions = tmp_path / "app_functions"
    shutil.copytree(REPO / "app_functions", functions, ignore=shutil.ignore_patterns("__pycache__"))
    with (functions / "tickets.py").open("a") as handle:
        handle.write(SLOW_CLAIMS)
    done = loadtest(
        "--p95-ms",
        "300",
        "--functions",
        str(functions),
        reports=tmp_path / "reports",
        data_dir=data_dir,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "VERDICT: NO-GO" in done.stdout
    assert "POST /fn/tickets.claim_next: p95" in done.stdout


def test_host_without_credentials_cannot_run(tmp_path: Path) -> None:
    done = loadtest("--host", "http://127.0.0.1:9", reports=tmp_path, data_dir=tmp_path)
    assert done.returncode == 2
    assert "--host needs credentials in the environment: SWARM_LT_AGENT_KEYS" in done.stderr


STATS_CSV = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,\
80%,90%,95%,98%,99%,99.9%,99.99%,100%
POST,/fn/tickets.get_stats,200,0,5,6,1,90,100,20.0,0.0,5,6,7,8,9,12,20,30,90,90,90
POST,/agent/claim,100,3,40,50,3,400,100,10.0,0.3,40,50,60,70,90,150,200,250,400,400,400
,Aggregated,300,3,6,20,1,400,100,30.0,0.3,6,8,10,12,40,90,150,200,400,400,400
"""


def test_report_table_and_verdict(tmp_path: Path) -> None:
    (tmp_path / "locust_stats.csv").write_text(STATS_CSV)
    (tmp_path / "locust_failures.csv").write_text(
        "Method,Name,Error,Occurrences\nPOST,/agent/claim,409 conflict: Claimed,3\n"
    )
    stats = read_stats(tmp_path / "locust")
    assert [r.name for r in stats.rows] == ["POST /agent/claim", "POST /fn/tickets.get_stats"]
    assert verdict(stats, 100, 0.01) == [
        "POST /agent/claim: p95 150 ms >= 100 ms",
        "POST /agent/claim: error rate 3.00% >= 1.00%",
        "Aggregated: error rate 1.00% >= 1.00%",  # 3 of 300: the limit is exclusive
    ]
    assert verdict(stats, 200, 0.05) == []
    cpu = {"locust": CpuFigure("locust", cpu_s=3.0, wall_s=30.0, peak_percent=25.0)}
    text = table(stats, 100, 0.01, cpu)
    assert "POST /fn/tickets.get_stats" in text and "VERDICT: NO-GO" in text
    assert "  locust       10%     25%" in text
    lines = {
        line.split()[1] if line.startswith("POST") else line.split()[0]: line
        for line in text.splitlines()
        if line.startswith(("POST", "Aggregated"))
    }
    assert lines["/agent/claim"].endswith("NO-GO")
    assert lines["/fn/tickets.get_stats"].endswith("ok")
    assert "3 x POST /agent/claim: 409 conflict: Claimed" in text
