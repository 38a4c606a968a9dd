"""Pool exhausted or database down: 503 `unavailable`, answered within the pool timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import AppFiles, LiveServer

SLOW = """
from runtime import query

@query(public=True)
async def hold(ctx, seconds: float):
    await ctx.sql("SELECT pg_sleep(%s)", seconds)
    return "done"

@query(public=True)
async def quick(ctx):
    rows = await ctx.sql("SELECT 1 AS one")
    return rows[0]["one"]
"""
SCHEMA: dict[str, Any] = {
    "tables": {},
    "functions": {
        "slow.hold": {
            "args": {
                "type": "object",
                "properties": {"seconds": {"type": "number"}},
                "required": ["seconds"],
            }
        },
        "slow.quick": {"args": {"type": "object", "properties": {}}},
    },
}


def slow_app(files: AppFiles) -> AppFiles:
    files.write_module("slow", SLOW)
    files.write_schema(SCHEMA)
    return files


def test_pool_exhausted_answers_503_within_the_pool_timeout(
    app_files: AppFiles, serve: Callable[..., LiveServer]
) -> None:
    server = serve(slow_app(app_files), pool_min=1, pool_max=1, pool_timeout_s=0.3)

    def hold() -> None:
        with server.client() as client:
            client.post("/fn/slow.hold", json={"seconds": 1.5})

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.3)
    with server.client() as client:
        started = time.monotonic()
        r = client.post("/fn/slow.quick", json={})
        elapsed = time.monotonic() - started
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"
        assert elapsed < 1.2  # the pool timeout, not the holder's 1.5 s
        holder.join(timeout=10)
        assert client.post("/fn/slow.quick", json={}).json() == {"value": 1}


def test_database_down_answers_503_and_readyz_fails(app_files: AppFiles, tmp_path: Path) -> None:
    from runtime.embedded_pg import EmbeddedPostgres

    cluster = EmbeddedPostgres(tmp_path / "own-pg", fsync=False, log=lambda _m: None)
    url = cluster.start()
    server = LiveServer(slow_app(app_files).settings(pool_timeout_s=0.5), url).start()
    try:
        with server.client() as client:
            assert client.post("/fn/slow.quick", json={}).status_code == 200
            cluster.stop()
            started = time.monotonic()
            r = client.post("/fn/slow.quick", json={})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable"
            r = client.get("/readyz")
            assert r.status_code == 503
            assert time.monotonic() - started < 5
            assert client.get("/healthz").status_code == 200
            # the database comes back: so does the runtime, without a restart
            cluster.start()
            deadline = time.monotonic() + 15
            while client.post("/fn/slow.quick", json={}).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        server.stop()
        cluster.stop()
