"""The go/no-go gate, inside Locust: thresholds as arguments, the verdict as the exit code.

Go needs the aggregate and every endpoint under `--p95-ms` with an error rate under
`--max-error-rate`, at least one request, and no exception in the users' own code (a
broken load generator measures nothing). The rule itself is `runtime.loadtest.report`'s, the
one `swarm-runtime loadtest` applies to the CSV it prints. Locust has no built-in threshold:
the `quitting` listener sets `environment.process_exit_code` (0 go, 1 no-go).
"""

from __future__ import annotations

import logging
from typing import Any

from locust import events

from runtime.loadtest.report import AGGREGATED, Row, Stats, verdict

log = logging.getLogger("swarm_load.gate")


def _row(entry: Any, name: str) -> Row:
    return Row(
        name=name,
        requests=entry.num_requests,
        failures=entry.num_failures,
        p95_ms=entry.get_response_time_percentile(0.95) or 0.0,
        p99_ms=entry.get_response_time_percentile(0.99) or 0.0,
        rps=entry.total_rps,
    )


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--p95-ms",
        type=float,
        default=100.0,
        env_var="LOCUST_P95_MS",
        help="go/no-go: p95 latency limit, per endpoint and overall (default 100)",
    )
    parser.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        env_var="LOCUST_MAX_ERROR_RATE",
        help="go/no-go: error-rate limit, a fraction (default 0.01 = 1%%)",
    )


@events.quitting.add_listener
def _gate(environment: Any, **_kwargs: Any) -> None:
    if environment.process_exit_code == 2:  # set by the setup: nothing was measured
        return
    options = environment.parsed_options
    stats = environment.stats
    rows = [_row(e, f"{e.method} {e.name}") for e in stats.entries.values()]
    measured = Stats(rows, _row(stats.total, AGGREGATED), failures=[])
    reasons = verdict(measured, options.p95_ms, options.max_error_rate)
    exceptions = sum(e["count"] for e in environment.runner.exceptions.values())
    if exceptions:
        reasons.append(f"{exceptions} exception(s) in the users' code (see the log)")
    environment.process_exit_code = 1 if reasons else 0
    if reasons:
        log.error("NO-GO: %s", "; ".join(reasons))
    else:
        log.info(
            "GO: every endpoint p95 < %g ms, error rate < %.2f%%",
            options.p95_ms,
            options.max_error_rate * 100,
        )
