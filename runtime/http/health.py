"""Liveness, readiness, build info and the runtime status page."""

from __future__ import annotations

import os
import platform
import time

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from runtime import __version__
from runtime.engine import Runtime
from runtime.errors import Forbidden, RuntimeFailure, Unauthenticated
from runtime.http.functions import authenticate
from runtime.http.responses import error_response, json_response
from runtime.sql import load

SQL = load("runtime.sql")


async def healthz(request: Request) -> Response:
    """The process is alive and serving HTTP; says nothing about the database."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready to serve calls: the database answers within the pool timeout."""
    runtime: Runtime = request.app.state.runtime
    try:
        async with runtime.pool.connection(timeout=runtime.settings.pool_timeout_s) as conn:
            await conn.execute(SQL["ready"])
    except (PoolTimeout, psycopg.Error):
        return json_response(
            {
                "status": "unavailable",
                "error": {"code": "unavailable", "message": "database unreachable"},
            },
            503,
        )
    return json_response(
        {
            "status": "ready",
            "registry_version": runtime.registry.version if runtime.registry else None,
        }
    )


async def version(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return json_response(
        {
            "name": "swarm-runtime",
            "version": __version__,
            "python": platform.python_version(),
            "pid": os.getpid(),
            "registry_version": runtime.registry.version if runtime.registry else None,
        }
    )


async def status(request: Request) -> Response:
    """Serving version, last reload, hot keys, transaction and pool counters (operators)."""
    runtime: Runtime = request.app.state.runtime
    if not runtime.settings.dev:
        try:
            identity = await authenticate(request, runtime)
            if identity is None:
                raise Unauthenticated("The status page requires authentication")
            if "admin" not in identity.roles and identity.kind not in ("dev", "system"):
                raise Forbidden("The status page is for admins")
        except RuntimeFailure as exc:
            return error_response(exc)
    registry = runtime.registry
    tx = runtime.transactor.stats
    return json_response(
        {
            "version": registry.version if registry else None,
            "functions": len(registry.functions) if registry else 0,
            "uptime_s": round(time.time() - runtime.started_at, 3),
            "reload": runtime.reload_status,
            "transactions": {
                "total": tx.transactions,
                "retries": tx.retries,
                "exhausted": tx.exhausted,
                "hot_key_waits": tx.hot_key_waits,
            },
            "hot_keys": runtime.hot_keys.top(),
            "pool": runtime.pool.get_stats(),
        }
    )
