"""Locust's CSV statistics into the go/no-go table and verdict.

The rule: go when the aggregate and every endpoint have a p95 below `p95_ms` and an error
rate below `max_error_rate`, and at least one request was made. `verdict` is its one home:
loadtests/swarm_load/gate.py applies it inside Locust too, to Locust's live statistics.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from runtime.loadtest.cpu import CpuFigure

AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class Row:
    name: str
    requests: int
    failures: int
    p95_ms: float
    p99_ms: float
    rps: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def problems(self, p95_ms: float, max_error_rate: float) -> list[str]:
        found = []
        if self.requests and self.p95_ms >= p95_ms:
            found.append(f"p95 {self.p95_ms:.0f} ms >= {p95_ms:g} ms")
        if self.requests and self.error_rate >= max_error_rate:
            found.append(f"error rate {self.error_rate:.2%} >= {max_error_rate:.2%}")
        return found


@dataclass(frozen=True)
class Stats:
    rows: list[Row]
    total: Row
    failures: list[tuple[str, str, int]]  # (endpoint, error, occurrences), most frequent first


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # "N/A" when an endpoint has no samples
        return 0.0


def read_stats(prefix: Path) -> Stats:
    """Read `<prefix>_stats.csv` and `<prefix>_failures.csv` as Locust writes them."""
    rows: list[Row] = []
    total: Row | None = None
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        for record in csv.DictReader(handle):
            name = (
                record["Name"]
                if record["Name"] == AGGREGATED
                else (f"{record['Type']} {record['Name']}".strip())
            )
            row = Row(
                name=name,
                requests=int(_number(record["Request Count"])),
                failures=int(_number(record["Failure Count"])),
                p95_ms=_number(record["95%"]),
                p99_ms=_number(record["99%"]),
                rps=_number(record["Requests/s"]),
            )
            if record["Name"] == AGGREGATED:
                total = row
            else:
                rows.append(row)
    if total is None:
        total = Row(AGGREGATED, 0, 0, 0.0, 0.0, 0.0)
    failures: list[tuple[str, str, int]] = []
    failures_csv = Path(f"{prefix}_failures.csv")
    if failures_csv.exists():
        with failures_csv.open(newline="") as handle:
            for record in csv.DictReader(handle):
                endpoint = f"{record['Method']} {record['Name']}"
                failures.append((endpoint, record["Error"], int(_number(record["Occurrences"]))))
    failures.sort(key=lambda f: -f[2])
    return Stats(sorted(rows, key=lambda r: r.name), total, failures)


def server_side(server_log: Path) -> str | None:
    """Latency as the server measured it (its call log), to set beside Locust's figures."""
    durations = []
    try:
        with server_log.open(errors="replace") as handle:
            for line in handle:
                if '"runtime.calls"' in line:
                    try:
                        durations.append(float(json.loads(line)["duration_ms"]))
                    except (ValueError, KeyError, TypeError):
                        continue
    except OSError:
        return None
    if not durations:
        return None
    durations.sort()

    def pct(p: float) -> float:
        return durations[min(len(durations) - 1, int(p * len(durations)))]

    return (
        f"server-side (its call log): {len(durations)} calls, p50 {pct(0.5):.1f} ms, "
        f"p95 {pct(0.95):.1f} ms, p99 {pct(0.99):.1f} ms"
    )


def verdict(stats: Stats, p95_ms: float, max_error_rate: float) -> list[str]:
    """Why the run is no-go; empty when it is go."""
    reasons = [] if stats.total.requests else ["no request was made"]
    for row in [*stats.rows, stats.total]:
        reasons += [f"{row.name}: {p}" for p in row.problems(p95_ms, max_error_rate)]
    return reasons


def table(
    stats: Stats,
    p95_ms: float,
    max_error_rate: float,
    cpu: dict[str, CpuFigure] | None = None,
    notes: list[str] | None = None,
) -> str:
    """The go/no-go table, the CPU figures and the verdict, as printed."""
    reasons = verdict(stats, p95_ms, max_error_rate)
    width = max([len(r.name) for r in stats.rows] + [len(AGGREGATED), 8])
    header = (
        f"{'endpoint':<{width}}  {'requests':>8}  {'errors':>7}  {'p95 ms':>7}  {'p99 ms':>7}"
        f"  {'req/s':>7}  verdict"
    )
    lines = [
        f"Go/no-go: p95 < {p95_ms:g} ms and error rate < {max_error_rate:.2%}, "
        "for every endpoint and overall",
        "",
        header,
        "-" * len(header),
    ]
    for row in [*stats.rows, stats.total]:
        if row is stats.total:
            lines.append("-" * len(header))
        ok = not row.problems(p95_ms, max_error_rate) and row.requests > 0
        lines.append(
            f"{row.name:<{width}}  {row.requests:>8}  {row.error_rate:>7.2%}  {row.p95_ms:>7.0f}"
            f"  {row.p99_ms:>7.0f}  {row.rps:>7.1f}  {'ok' if ok else 'NO-GO'}"
        )
    if stats.failures:
        lines += ["", "Most frequent failures:"]
        lines += [f"  {n:>6} x {endpoint}: {error}" for endpoint, error, n in stats.failures[:8]]
    if cpu:
        cores = os.cpu_count() or 1
        lines += ["", f"CPU during the run (percent of one core, of {cores}; mean, peak):"]
        lines += [
            f"  {name:<9} {figure.percent:>5.0f}%  {figure.peak_percent:>5.0f}%"
            f"   ({figure.cpu_s:.1f} s CPU in {figure.wall_s:.1f} s)"
            for name, figure in cpu.items()
        ]
    for note in notes or []:
        lines.append(f"note: {note}")
    lines.append("")
    if reasons:
        lines.append("VERDICT: NO-GO")
        lines += [f"  - {reason}" for reason in reasons]
    else:
        lines.append("VERDICT: GO")
    return "\n".join(lines)
