"""Prometheus metrics at `GET /metrics` (text exposition format), as a built-in plugin.

What is measured, and from where:

- per function, from the `call_finished` hook: calls by HTTP status, errors by code, a
  latency histogram, transaction attempts, retries and hot-key waits. A call of a function
  that does not exist is counted under `function="_unknown"`, so callers cannot create label
  values at will;
- every transaction of the process (HTTP calls, actions, plugins, the scheduler), copied from
  the transactor's `TxStats` counters: transactions, retries, retries exhausted, hot-key waits;
- the connection pool: open connections, connections in use, requests waiting, the maximum;
- query subscriptions (`GET /ws`): open WebSocket connections and active subscriptions;
- reloads by outcome and the duration of the last one, from the `reloaded` hook;
- webhook deliveries by provider and outcome, from the `webhook_delivered` hook (webhook
  routes call `runtime.notify_webhook_delivered(...)`).

The route is unauthenticated, as Prometheus scrapers expect: keep it off the public
internet (deploy/nginx answers 404 for it; scrape the runtime's port directly).

Several workers (`serve --workers N`): `serve` points PROMETHEUS_MULTIPROC_DIR at a fresh
folder before starting them; each worker writes its values there (prometheus-client's
multiprocess mode) and the worker that answers a scrape aggregates them all: counters and
histograms are summed, pool gauges summed over live workers, and the last reload duration is
the most recent one. In that mode each worker also refreshes its pool and transaction figures
every `SYNC_INTERVAL_S`, since a scrape only reaches one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from typing import Any, NamedTuple

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from runtime.hookspecs import hookimpl
from runtime.types import CallInfo

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL_S = 2.0
UNKNOWN_FUNCTION = "_unknown"
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

REGISTRY = CollectorRegistry()

CALLS = Counter(
    "swarm_runtime_function_calls",
    "Function calls, by HTTP status answered",
    ["function", "kind", "status"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "swarm_runtime_function_errors",
    "Function calls that failed, by error code",
    ["function", "code"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "swarm_runtime_function_duration_seconds",
    "Function call latency, request to response",
    ["function"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "swarm_runtime_function_attempts",
    "Transaction attempts of function calls",
    ["function"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "swarm_runtime_function_retries",
    "Transaction attempts beyond the first (serialization failures retried)",
    ["function"],
    registry=REGISTRY,
)
HOT_KEY_WAITS = Counter(
    "swarm_runtime_function_hot_key_waits",
    "Calls that queued on a hot key's advisory lock",
    ["function"],
    registry=REGISTRY,
)
TRANSACTIONS = Counter(
    "swarm_runtime_transactions",
    "Transactions run by this runtime (every caller)",
    registry=REGISTRY,
)
TX_RETRIES = Counter(
    "swarm_runtime_transaction_retries",
    "Transaction retries after serialization failures",
    registry=REGISTRY,
)
TX_EXHAUSTED = Counter(
    "swarm_runtime_transaction_retries_exhausted",
    "Transactions that gave up after exhausting their retries (409)",
    registry=REGISTRY,
)
TX_HOT_KEY_WAITS = Counter(
    "swarm_runtime_hot_key_waits",
    "Transactions that queued on a hot key's advisory lock",
    registry=REGISTRY,
)
POOL_SIZE = Gauge(
    "swarm_runtime_pool_connections",
    "Open database connections in the pool",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
POOL_IN_USE = Gauge(
    "swarm_runtime_pool_connections_in_use",
    "Pool connections lent to a call",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
POOL_WAITING = Gauge(
    "swarm_runtime_pool_requests_waiting",
    "Calls waiting for a pool connection",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
POOL_MAX = Gauge(
    "swarm_runtime_pool_max_connections",
    "The pools' maximum size",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
SUBSCRIPTIONS = Gauge(
    "swarm_runtime_subscriptions",
    "Active query subscriptions (GET /ws)",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
SUBSCRIPTION_RUNS = Counter(
    "swarm_runtime_subscription_runs",
    "Query runs for subscriptions (first results and re-runs; not in the call metrics)",
    registry=REGISTRY,
)
SUBSCRIPTION_PUSHES = Counter(
    "swarm_runtime_subscription_pushes",
    "Frames pushed to subscribers (runs whose result changed)",
    registry=REGISTRY,
)
WS_CONNECTIONS = Gauge(
    "swarm_runtime_ws_connections",
    "Open WebSocket connections (GET /ws)",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
RELOADS = Counter(
    "swarm_runtime_reloads",
    "Reloads of app_functions/schema.json, by outcome (ok, error)",
    ["outcome"],
    registry=REGISTRY,
)
RELOAD_DURATION = Gauge(
    "swarm_runtime_reload_last_duration_seconds",
    "How long the last reload attempt took",
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "swarm_runtime_webhook_deliveries",
    "Webhook deliveries, by provider and outcome (processed, duplicate, ignored, rejected, "
    "invalid, error)",
    ["provider", "outcome"],
    registry=REGISTRY,
)

# What each source's counters (a transactor's, a subscription hub's) were at the last sync:
# the counters above grow by the difference. Keyed weakly, so a stopped runtime (tests start
# many) is forgotten.
_synced: weakref.WeakKeyDictionary[Any, tuple[int, ...]] = weakref.WeakKeyDictionary()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def sync(runtime: Any) -> None:
    """Copy the runtime's pool figures and transaction counters into the metrics."""
    stats = runtime.pool.get_stats()
    size = stats.get("pool_size", 0)
    POOL_SIZE.set(size)
    POOL_IN_USE.set(size - stats.get("pool_available", 0))
    POOL_WAITING.set(stats.get("requests_waiting", 0))
    POOL_MAX.set(stats.get("pool_max", runtime.settings.pool_max))
    hub = getattr(runtime, "subscriptions", None)
    SUBSCRIPTIONS.set(hub.count if hub is not None else 0)
    WS_CONNECTIONS.set(hub.connections if hub is not None else 0)
    if hub is not None:
        _advance(hub, (SUBSCRIPTION_RUNS, SUBSCRIPTION_PUSHES), (hub.runs, hub.pushes))
    tx = runtime.transactor.stats
    _advance(
        runtime.transactor,
        (TRANSACTIONS, TX_RETRIES, TX_EXHAUSTED, TX_HOT_KEY_WAITS),
        (tx.transactions, tx.retries, tx.exhausted, tx.hot_key_waits),
    )


def _advance(source: Any, counters: tuple[Counter, ...], now: tuple[int, ...]) -> None:
    """Grow each counter by how much its figure in `source` grew since the last sync."""
    before = _synced.get(source, (0,) * len(now))
    for counter, new, old in zip(counters, now, before, strict=True):
        if new > old:
            counter.inc(new - old)
    _synced[source] = now


def exposition(runtime: Any) -> bytes:
    """The text a scrape gets: this process's metrics, or every worker's in multiprocess mode."""
    sync(runtime)
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def metrics_endpoint(request: Request) -> Response:
    runtime = request.app.state.runtime
    if multiprocess_dir() is None:
        body = exposition(runtime)
    else:  # reads every worker's files: keep the event loop free meanwhile
        body = await asyncio.to_thread(exposition, runtime)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _sync_loop(runtime: Any) -> None:
    while True:
        await asyncio.sleep(SYNC_INTERVAL_S)
        with contextlib.suppress(Exception):
            sync(runtime)


# -- hooks ------------------------------------------------------------------------------


@hookimpl
def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics_endpoint, methods=["GET"])]


@hookimpl
async def startup(runtime: Any) -> None:
    sync(runtime)
    if multiprocess_dir() is not None:
        runtime.spawn(_sync_loop(runtime))


@hookimpl
async def shutdown(runtime: Any) -> None:
    with contextlib.suppress(Exception):
        sync(runtime)
    if multiprocess_dir() is not None:
        # This worker's pool gauges stop counting towards the live sums.
        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _Series(NamedTuple):
    calls: Any
    duration: Any
    attempts: Any
    retries: Any
    hot_key_waits: Any


# Bounded: functions are the registry's (unknown names are one label) x kinds x statuses.
_series: dict[tuple[str, str, int], _Series] = {}


@hookimpl
def call_finished(info: CallInfo) -> None:
    function = UNKNOWN_FUNCTION if info.kind == "?" else info.function  # never looked up
    key = (function, info.kind, info.status)
    series = _series.get(key)
    if series is None:  # `labels()` costs ~30 µs per call: resolve each series once
        series = _series[key] = _Series(
            CALLS.labels(function, info.kind, str(info.status)),
            DURATION.labels(function),
            ATTEMPTS.labels(function),
            RETRIES.labels(function),
            HOT_KEY_WAITS.labels(function),
        )
    series.calls.inc()
    if info.status >= 400:
        ERRORS.labels(function, info.code or "unknown").inc()
    series.duration.observe(info.duration_s)
    if info.attempts > 0:
        series.attempts.inc(info.attempts)
        if info.attempts > 1:
            series.retries.inc(info.attempts - 1)
    if info.hot_key_waited:
        series.hot_key_waits.inc()


@hookimpl
def reloaded(
    version: Any,
    added: list[str],
    changed: list[str],
    removed: list[str],
    duration_s: float,
    error: str | None,
) -> None:
    RELOADS.labels("ok" if error is None else "error").inc()
    RELOAD_DURATION.set(duration_s)


@hookimpl
def webhook_delivered(provider: str, outcome: str, status: int, duration_s: float) -> None:
    WEBHOOKS.labels(provider, outcome).inc()
