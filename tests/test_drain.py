"""`swarm-runtime serve` drains on SIGTERM: in-flight calls finish, then the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import AppFiles, free_port

SLOW = """
import asyncio
from pathlib import Path
from runtime import mutation

@mutation(public=True)
async def work(ctx, marker: str, seconds: float):
    await ctx.db.insert("jobs", {"marker": marker})
    Path(marker).write_text("started")
    await asyncio.sleep(seconds)
    return {"done": True}
"""

SCHEMA: dict[str, Any] = {
    "tables": {
        "jobs": {
            "type": "object",
            "properties": {"marker": {"type": "string"}},
            "required": ["marker"],
        }
    },
    "functions": {
        "slow.work": {
            "args": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"marker": {"type": "string"}, "seconds": {"type": "number"}},
                "required": ["marker", "seconds"],
            }
        }
    },
}


def cli() -> list[str]:
    script = Path(sys.executable).parent / "swarm-runtime"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runtime.cli"]


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_sigterm_lets_the_in_flight_call_finish(
    app_files: AppFiles, database_url: str, tmp_path: Path
) -> None:
    app_files.write_module("slow", SLOW)
    app_files.write_schema(SCHEMA)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": database_url, "RUNTIME_LOG_FORMAT": "json"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *cli(),
                "serve",
                "--port",
                str(port),
                "--functions",
                str(app_files.functions),
                "--schema",
                str(app_files.schema_path),
                "--plugins",
                str(app_files.plugins),
                "--data",
                str(app_files.root / ".runtime"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: proc.poll() is not None or ready(url), 30, "serve to be ready")
        assert proc.poll() is None, log.read_text()

        marker = tmp_path / "started"
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                r = httpx.post(
                    f"{url}/fn/slow.work",
                    json={"marker": str(marker), "seconds": 1.5},
                    timeout=30,
                )
                outcome["status"], outcome["body"] = r.status_code, r.json()
            except Exception as exc:
                outcome["error"] = repr(exc)

        caller = threading.Thread(target=call)
        caller.start()
        wait_until(marker.exists, 10, "the call to start")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)

        # draining: no new connections are accepted while the call runs
        wait_until(lambda: not ready(url), 5, "serve to stop accepting")
        assert proc.poll() is None, "serve exited before its in-flight call finished"

        caller.join(timeout=30)
        assert outcome == {"status": 200, "body": {"value": {"done": True}}}
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert time.monotonic() - sent >= 1.0, "serve waited for the call"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    with psycopg.connect(database_url) as conn:
        (count,) = conn.execute("SELECT count(*) FROM jobs").fetchone() or (0,)
    assert count == 1, "the in-flight mutation committed"
    calls = [
        entry
        for line in log.read_text().splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("logger") == "runtime.calls"
    ]
    assert [(c["function"], c["status"]) for c in calls] == [("slow.work", 200)]
