"""Build, migrate and swap: one reload, and the loop that runs one per batch of changes."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.db.migrate import apply_schema
from runtime.errors import LoadError
from runtime.registry import build_registry
from runtime.reload.plugins import swap_plugins
from runtime.reload.watcher import batches

if TYPE_CHECKING:
    from runtime.engine import Runtime

log = logging.getLogger("runtime.reload")


@dataclass
class ReloadOutcome:
    ok: bool
    version: str
    generation: int
    duration_ms: float
    changed_files: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    migrations: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)  # plugins swapped
    error: str | None = None
    at: float = field(default_factory=time.time)

    def summary(self) -> str:
        files = ", ".join(self.changed_files[:3]) + (" ..." if len(self.changed_files) > 3 else "")
        if not self.ok:
            return (
                f"reload failed after {self.duration_ms:.1f} ms ({files}); still serving version "
                f"{self.version}:\n{self.error}"
            )
        parts = [
            f"+{len(self.added)} added",
            f"~{len(self.changed)} changed",
            f"-{len(self.removed)} removed",
        ]
        if self.migrations:
            parts.append(f"{len(self.migrations)} schema change(s)")
        if self.plugins:
            parts.append(f"plugins swapped: {', '.join(self.plugins)}")
        return (
            f"reloaded in {self.duration_ms:.1f} ms ({files}): {', '.join(parts)}"
            f" -> version {self.version}"
        )


class Reloader:
    """Owns the reload loop of one runtime; `stop` ends it promptly."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.stop_event = asyncio.Event()
        self.history: list[ReloadOutcome] = []
        self._lock = asyncio.Lock()

    async def reload(
        self, changed_files: list[str] | None = None, plugin_files: list[Path] | None = None
    ) -> ReloadOutcome:
        """Swap changed plugins, then build a complete new registry off to the side, apply
        its schema diff, and swap it in."""
        async with self._lock:
            runtime = self.runtime
            settings = runtime.settings
            current = runtime.registry
            started = time.perf_counter()
            generation = (current.generation if current else 0) + 1
            plugins: list[str] = []
            try:
                if plugin_files:
                    plugins = await swap_plugins(runtime, plugin_files, generation)
                registry = build_registry(
                    settings.functions_dir, settings.schema_path, generation, previous=current
                )
                if current is None or registry.schema.raw != current.schema.raw:
                    migrations = await apply_schema(
                        runtime.pool, registry.schema, allow_destructive=settings.allow_destructive
                    )
                else:
                    migrations = []
            except Exception as exc:
                error = (
                    "\n".join(exc.problems)
                    if isinstance(exc, LoadError)
                    else "".join(traceback.format_exception_only(exc)).strip()
                )
                outcome = ReloadOutcome(
                    ok=False,
                    version=current.version if current else "-",
                    generation=current.generation if current else 0,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    changed_files=changed_files or [],
                    error=error,
                )
            else:
                added, changed, removed = registry.diff(current)
                runtime.registry = registry  # the swap: one reference assignment
                outcome = ReloadOutcome(
                    ok=True,
                    version=registry.version,
                    generation=registry.generation,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    changed_files=changed_files or [],
                    added=added,
                    changed=changed,
                    removed=removed,
                    migrations=migrations,
                    plugins=plugins,
                )
            self._record(outcome)
            return outcome

    def _record(self, outcome: ReloadOutcome) -> None:
        self.history = [*self.history[-19:], outcome]
        runtime = self.runtime
        runtime.reload_status = {
            "serving_version": runtime.registry.version if runtime.registry else None,
            "reloads": sum(1 for o in self.history if o.ok),
            "last": asdict(outcome),
            "last_error": next((asdict(o) for o in reversed(self.history) if not o.ok), None),
        }
        (log.info if outcome.ok else log.error)(outcome.summary())
        runtime.notify_reloaded(outcome)

    async def run(self) -> None:
        """Reload once per batch of changes until stopped."""
        settings = self.runtime.settings
        folders = [settings.functions_dir, settings.plugins_dir]
        root = settings.functions_dir.resolve().parent
        plugins_dir = settings.plugins_dir.resolve()
        async for changed in batches(folders, settings.schema_path, self.stop_event):
            names = sorted(_relative(p, root) for p in changed)
            plugin_files = [Path(p) for p in changed if Path(p).parent == plugins_dir]
            await self.reload(names, plugin_files)

    def stop(self) -> None:
        self.stop_event.set()


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
