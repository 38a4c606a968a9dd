"""Swapping plugins whose files changed, one plugin at a time.

Only the changed `plugins/*.py` files are touched: each new module is imported first (a
broken one leaves every plugin as it was), then the old module is shut down and unregistered
and the new one registered and started. Routes and VM drivers are collected again. Other
plugins keep running undisturbed (the RBAC listener, the lease sweeper, live VMs).
"""

from __future__ import annotations

import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pluggy

from runtime import hookspecs
from runtime.errors import LoadError
from runtime.plugins import call_plugin, file_plugin_name, load_plugin_file

if TYPE_CHECKING:
    from runtime.engine import Runtime


def _import_all(paths: list[Path], generation: int) -> dict[str, ModuleType | None]:
    """New modules by plugin name (None: the file was deleted); LoadError if any fails."""
    modules: dict[str, ModuleType | None] = {}
    problems: list[str] = []
    for path in paths:
        if path.name.startswith("_"):
            continue
        if not path.exists():
            modules[file_plugin_name(path)] = None
            continue
        try:
            modules[file_plugin_name(path)] = load_plugin_file(path, generation)
        except Exception:
            problems.append(f"plugin {path.name!r} failed to load:\n{traceback.format_exc()}")
    if problems:
        raise LoadError(problems)
    return modules


async def swap_plugins(runtime: Runtime, paths: list[Path], generation: int) -> list[str]:
    """Replace the plugins of `paths` in the running runtime; the names swapped."""
    modules = _import_all(paths, generation)
    pm = runtime.plugins
    for name, module in modules.items():
        old = pm.get_plugin(name)
        if module is not None:
            _check(name, module)
        if old is not None:
            await call_plugin(pm, old, "shutdown", runtime=runtime)
            pm.unregister(old)
        if module is not None:
            pm.register(module, name=name)
            await call_plugin(pm, module, "startup", runtime=runtime)
    runtime.vm_drivers = {k: v for drivers in pm.hook.vm_drivers() for k, v in drivers.items()}
    if runtime.rebuild_routes is not None:
        runtime.rebuild_routes()
    return sorted(modules)


def _check(name: str, module: ModuleType) -> None:
    """Hook implementations must match the hook specifications, before anything is swapped."""
    probe = pluggy.PluginManager(hookspecs.PROJECT)
    probe.add_hookspecs(hookspecs)
    try:
        probe.register(module, name=name)
        probe.check_pending()
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise LoadError([f"plugin {name!r} does not fit the hooks: {exc}"]) from None
