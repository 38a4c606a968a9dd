"""The real CLI in a subprocess: `dev` with the embedded cluster and its token, and
`serve --reload --workers 2` converging every worker on the same version."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, AppFiles, free_port

pytestmark = pytest.mark.slow

MODULE = """
from runtime import query

@query
async def marker(ctx):
    return "{marker}"
"""
SCHEMA = {"tables": {}, "functions": {"probe.marker": {"args": {"type": "object"}}}}


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.communicate()[0]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=10)
    return output or ""


@pytest.fixture
def probe_app(app_files: AppFiles) -> Iterator[AppFiles]:
    app_files.write_module("probe", MODULE.format(marker="one"))
    app_files.write_schema(SCHEMA)
    yield app_files


def app_args(files: AppFiles, port: int) -> list[str]:
    return [
        "--functions",
        str(files.functions),
        "--schema",
        str(files.schema_path),
        "--plugins",
        str(files.plugins),
        "--port",
        str(port),
    ]


def test_dev_starts_embedded_postgres_prints_token_and_stops_cleanly(
    probe_app: AppFiles, tmp_path: Path
) -> None:
    data = Path(f"/tmp/swarm-dev-test-{os.getpid()}-{time.monotonic_ns()}")
    data.mkdir(mode=0o755)
    port = free_port()
    env = {"RUNTIME_DATA": str(data)}
    env.pop("DATABASE_URL", None)
    proc = start(
        ["dev", *app_args(probe_app, port), "--data", str(data)], {**env, "DATABASE_URL": ""}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        token = (data / "dev-token").read_text().strip()
        r = httpx.post(
            f"{url}/fn/probe.marker", json={}, headers={"authorization": f"Bearer {token}"}
        )
        assert r.json() == {"value": "one"}
        assert httpx.post(f"{url}/fn/probe.marker", json={}).status_code == 401
    finally:
        output = stop(proc)
    assert proc.returncode == 0, output
    assert url in output and token in output
    pids = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout
    assert pids.strip() == "", "the embedded cluster must stop with the server"
    # the cluster is reused on the next start
    port = free_port()
    proc = start(
        ["dev", *app_args(probe_app, port), "--data", str(data)], {**env, "DATABASE_URL": ""}
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        output = stop(proc)
    assert "initdb" not in output.lower() or "reus" in output.lower()
    subprocess.run(["rm", "-rf", str(data)], check=False)


def test_serve_reload_with_two_workers_converges(probe_app: AppFiles, database_url: str) -> None:
    port = free_port()
    proc = start(
        ["serve", "--reload", "--workers", "2", *app_args(probe_app, port)],
        {"DATABASE_URL": database_url, "RUNTIME_DEV": "1"},
    )
    url = f"http://127.0.0.1:{port}"

    def versions(n: int = 30) -> tuple[set[str], set[int]]:
        seen, pids = set(), set()
        for _ in range(n):  # a new connection each time, so both workers answer
            body: dict[str, Any] = httpx.get(
                f"{url}/version", headers={"connection": "close"}
            ).json()
            seen.add(body["registry_version"])
            pids.add(body["pid"])
        return seen, pids

    try:
        wait_healthy(url, proc)
        before, pids = versions()
        assert len(before) == 1
        probe_app.write_module("probe", MODULE.format(marker="two"))
        deadline = time.monotonic() + 20
        while True:
            after, pids_after = versions()
            pids |= pids_after
            if len(after) == 1 and after != before:
                break
            assert time.monotonic() < deadline, (before, after)
            time.sleep(0.05)
        assert len(pids) == 2, "both workers answered"
    finally:
        output = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, output
    assert len(re.findall(r"reloaded in", output)) >= 2, output
