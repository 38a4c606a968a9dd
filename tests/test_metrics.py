"""`GET /metrics`: Prometheus counters move with calls, reloads and webhook deliveries, one
worker or several."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AppFiles, LiveServer, free_port

COUNTERS = """
from runtime import mutation, query, UserError

@mutation
async def bump(ctx, key: str):
    row = await ctx.db.query("counters").with_index("by_key", key=key).first()
    if row is None:
        await ctx.db.insert("counters", {"key": key, "n": 1})
    else:
        await ctx.db.patch("counters", row["_id"], {"n": row["n"] + 1})
    return True

@query
async def refuse(ctx):
    raise UserError("conflict", "No")
"""

SCHEMA: dict[str, Any] = {
    "tables": {
        "counters": {
            "type": "object",
            "properties": {"key": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["key", "n"],
            "indexes": {"by_key": ["key"]},
        }
    },
    "functions": {
        "counters.bump": {
            "args": {
                "type": "object",
                "properties": {"key": {"type": "string"}},
                "required": ["key"],
                "additionalProperties": False,
            }
        },
        "counters.refuse": {"args": {"type": "object", "additionalProperties": False}},
    },
}

WEBHOOK_PLUGIN = """
from starlette.responses import JSONResponse
from starlette.routing import Route
from runtime import hookimpl

async def receive(request):
    request.app.state.runtime.notify_webhook_delivered("acme", "processed", 200, 0.001)
    return JSONResponse({"ok": True})

@hookimpl
def routes():
    return [Route("/webhooks/acme", receive, methods=["POST"])]
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str) -> Samples:
    r = httpx.get(f"{base_url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def app(app_files: AppFiles) -> AppFiles:
    app_files.write_module("counters", COUNTERS)
    app_files.write_schema(SCHEMA)
    app_files.write_plugin("acme_webhooks", WEBHOOK_PLUGIN)
    return app_files


def test_counters_move_with_calls(
    app: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> None:
    server = serve(app, dev=True)
    before = scrape(server.url)
    with server.client(dev_token) as client:
        for _ in range(5):
            assert client.post("/fn/counters.bump", json={"key": "a"}).status_code == 200
        assert client.post("/fn/counters.refuse", json={}).status_code == 409
        assert client.post("/fn/counters.bump", json={"key": 7}).status_code == 400
        assert client.post("/fn/no.such_function", json={}).status_code == 404
        assert client.post("/fn/another.missing", json={}).status_code == 404
        assert client.post("/webhooks/acme", content=b"{}").status_code == 200
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    calls = "swarm_runtime_function_calls_total"
    assert delta(calls, function="counters.bump", kind="mutation", status="200") == 5
    assert delta(calls, function="counters.bump", kind="mutation", status="400") == 1
    assert delta(calls, function="counters.refuse", kind="query", status="409") == 1
    # unknown names share one label value: callers cannot create series at will
    assert delta(calls, function="_unknown", kind="?", status="404") == 2
    assert not any("no.such_function" in str(key) for key in after)
    errors = "swarm_runtime_function_errors_total"
    assert delta(errors, function="counters.refuse", code="conflict") == 1
    assert delta(errors, function="counters.bump", code="invalid_args") == 1
    assert delta(errors, function="_unknown", code="not_found") == 2
    histogram = "swarm_runtime_function_duration_seconds"
    assert delta(f"{histogram}_count", function="counters.bump") == 6
    assert delta(f"{histogram}_bucket", function="counters.bump", le="+Inf") == 6
    assert delta(f"{histogram}_sum", function="counters.bump") > 0
    assert delta("swarm_runtime_function_attempts_total", function="counters.bump") >= 5
    assert delta("swarm_runtime_transactions_total") >= 6
    assert value(after, "swarm_runtime_pool_connections") >= 2  # pool_min of the test settings
    assert value(after, "swarm_runtime_pool_max_connections") == 8
    assert value(after, "swarm_runtime_pool_connections_in_use") >= 0
    assert value(after, "swarm_runtime_pool_requests_waiting") == 0
    assert (
        delta("swarm_runtime_webhook_deliveries_total", provider="acme", outcome="processed") == 1
    )


def test_retries_are_counted(
    app: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> None:
    """Concurrent increments of one row conflict under SERIALIZABLE; every retry is counted."""
    from concurrent.futures import ThreadPoolExecutor

    server = serve(app, dev=True)
    before = scrape(server.url)

    def bump(_: int) -> int:
        with server.client(dev_token) as client:
            return client.post("/fn/counters.bump", json={"key": "hot"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(bump, range(40)))
    assert statuses.count(200) == 40
    after = scrape(server.url)
    attempts = value(
        after, "swarm_runtime_function_attempts_total", function="counters.bump"
    ) - value(before, "swarm_runtime_function_attempts_total", function="counters.bump")
    retries = value(
        after, "swarm_runtime_function_retries_total", function="counters.bump"
    ) - value(before, "swarm_runtime_function_retries_total", function="counters.bump")
    assert attempts == 40 + retries
    tx_retries = value(after, "swarm_runtime_transaction_retries_total") - value(
        before, "swarm_runtime_transaction_retries_total"
    )
    assert tx_retries == retries


def test_reloads_are_counted(
    app: AppFiles, serve: Callable[..., LiveServer], dev_token: str
) -> None:
    server = serve(app, dev=True, reload=True)
    before = scrape(server.url)
    reloads = "swarm_runtime_reloads_total"
    app.write_module("counters", COUNTERS + "\n# touched\n")
    deadline = time.monotonic() + 15
    while value(scrape(server.url), reloads, outcome="ok") == value(before, reloads, outcome="ok"):
        assert time.monotonic() < deadline, "no reload was counted within 15 s"
        time.sleep(0.1)
    app.write_module("counters", COUNTERS + "\nthis is not python\n")
    while value(scrape(server.url), reloads, outcome="error") == value(
        before, reloads, outcome="error"
    ):
        assert time.monotonic() < deadline, "no failed reload was counted within 15 s"
        time.sleep(0.1)
    after = scrape(server.url)
    assert 0 < value(after, "swarm_runtime_reload_last_duration_seconds") < 15


@pytest.mark.slow
def test_workers_share_their_metrics(app: AppFiles, database_url: str, tmp_path: Path) -> None:
    """`serve --workers 2`: whichever worker answers a scrape reports every worker's calls."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RUNTIME_DEV": "0",
        "RUNTIME_LOG_FORMAT": "json",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime.cli",
                "serve",
                "--workers",
                "2",
                "--port",
                str(port),
                "--functions",
                str(app.functions),
                "--schema",
                str(app.schema_path),
                "--plugins",
                str(app.plugins),
                "--data",
                str(data),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve --workers 2 did not become ready"
            time.sleep(0.1)
        folders = list((data / "metrics").iterdir())
        assert len(folders) == 1, "serve made one fresh multiprocess folder"
        # anonymous calls: 401 is counted like any other outcome; new connections spread
        # the calls over both workers
        for _ in range(40):
            assert httpx.post(f"{base}/fn/counters.bump", json={"key": "k"}).status_code == 401
        pids = {f.name.rsplit("_", 1)[-1] for f in folders[0].glob("counter_*.db")}
        assert len(pids) == 2, f"both workers wrote their counters: {pids}"
        for _ in range(5):  # the same total whichever worker answers
            samples = scrape(base)
            assert (
                value(
                    samples,
                    "swarm_runtime_function_calls_total",
                    function="counters.bump",
                    kind="mutation",
                    status="401",
                )
                == 40
            )
            assert value(samples, "swarm_runtime_pool_connections") >= 2 * 4  # pool_min each
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert not (data / "metrics" / folders[0].name).exists(), "the folder is removed on exit"
