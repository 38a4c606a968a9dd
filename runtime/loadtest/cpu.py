"""How much CPU each side of a load test used: the load generator, the server, PostgreSQL.

A background thread samples the CPU time (user + system) of each process tree — the root
process and its children, found again at every sample so workers and PostgreSQL backends
that come and go are counted — and keeps the sum per tree of the highest time seen for each
process. Figures are percent of one core over the sampled window (200% = two cores busy).
A last figure, "other", is the rest of the machine: every CPU second the kernel counted as
busy minus those of the sampled trees — other people's work on a shared machine, which
makes latencies worse without showing in the trees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil


@dataclass
class CpuFigure:
    name: str
    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_percent: float = 0.0
    baseline_s: float | None = None  # CPU time the tree had used before the window
    per_process: dict[tuple[int, float], float] = field(default_factory=dict, repr=False)

    @property
    def percent(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


OTHER = "other"


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    not_busy = ("idle", "iowait", "guest", "guest_nice")  # guest time is also in user time
    return float(sum(times)) - sum(float(getattr(times, name, 0.0)) for name in not_busy)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class CpuSampler:
    """`with CpuSampler({"locust": pid, "server": pid}) as s: ...; s.figures`."""

    def __init__(self, roots: Mapping[str, int | None], interval_s: float = 0.5) -> None:
        self.roots = {name: pid for name, pid in roots.items() if pid}
        self.interval_s = interval_s
        self.figures = {name: CpuFigure(name) for name in [*self.roots, OTHER]}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._started = 0.0

    def __enter__(self) -> CpuSampler:
        self._started = time.monotonic()
        self._sample(0.0)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(time.monotonic() - self._started)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            before = {name: f.cpu_s for name, f in self.figures.items()}
            self._sample(now - self._started)
            for name, figure in self.figures.items():
                step = 100.0 * (figure.cpu_s - before[name]) / max(now - last, 1e-6)
                figure.peak_percent = max(figure.peak_percent, step)
            last = now

    def _sample(self, elapsed_s: float) -> None:
        ours = 0.0
        for name, root in self.roots.items():
            figure = self.figures[name]
            for proc in _tree(root):
                try:
                    times = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                except psutil.Error:
                    continue
                used = times.user + times.system
                figure.per_process[key] = max(figure.per_process.get(key, 0.0), used)
            total = sum(figure.per_process.values())
            if figure.baseline_s is None:
                figure.baseline_s = total
            figure.cpu_s = total - figure.baseline_s
            figure.wall_s = elapsed_s
            ours += figure.cpu_s
        other = self.figures[OTHER]
        busy = _machine_busy_s()
        if other.baseline_s is None:
            other.baseline_s = busy
        other.cpu_s = max(0.0, busy - other.baseline_s - ours)
        other.wall_s = elapsed_s
