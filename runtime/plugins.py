"""Building the plugin manager and calling hooks that may be async.

Built-in behaviour is registered first, so a user's plugin (from `plugins/` or a
`swarm_runtime` entry point) registered later is called first and wins. pluggy calls
implementations synchronously; `call_first`/`call_all` await the async ones in the same order.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from runtime import hookspecs
from runtime.errors import LoadError, RuntimeFailure

PLUGIN_MODULE_PREFIX = "swarm_plugins"


def load_plugin_file(path: Path, generation: int = 0) -> ModuleType:
    """Import one plugin file as a fresh module (`swarm_plugins.<stem>`)."""
    name = (
        f"{PLUGIN_MODULE_PREFIX}.{path.stem}"
        if generation == 0
        else (f"{PLUGIN_MODULE_PREFIX}_{generation}.{path.stem}")
    )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def file_plugin_name(path: Path) -> str:
    """The name a plugin loaded from `plugins/<file>` is registered under."""
    return f"plugins/{path.name}"


def make_plugin_manager(
    plugins_dir: Path | None,
    *,
    defaults: list[object] = (),  # type: ignore[assignment]
    entry_points: bool = True,
    generation: int = 0,
) -> pluggy.PluginManager:
    """A new plugin manager: defaults first, then plugins/*.py, then entry points.

    A plugin that fails to import raises LoadError naming the plugin, with its traceback.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for plugin in defaults:
        pm.register(plugin, name=f"default:{getattr(plugin, '__name__', type(plugin).__name__)}")
    problems: list[str] = []
    if plugins_dir is not None and plugins_dir.is_dir():
        for path in sorted(plugins_dir.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                module = load_plugin_file(path, generation)
                pm.register(module, name=file_plugin_name(path))
            except Exception:
                problems.append(f"plugin {path.name!r} failed to load:\n{traceback.format_exc()}")
    if entry_points:
        for entry_point in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            if pm.get_plugin(entry_point.name) is not None or pm.is_blocked(entry_point.name):
                continue
            try:
                pm.register(entry_point.load(), name=entry_point.name)
            except Exception:
                problems.append(
                    f"entry-point plugin {entry_point.name!r} ({entry_point.value}) failed to "
                    f"load:\n{traceback.format_exc()}"
                )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        problems.append(f"plugin {exc.plugin!r} implements an unknown hook: {exc}")
    if problems:
        raise LoadError(problems)
    return pm


def plugin_name(pm: pluggy.PluginManager, impl: pluggy.HookImpl) -> str:
    return pm.get_name(impl.plugin) or impl.plugin_name


def _impls(hook: Any) -> list[pluggy.HookImpl]:
    # pluggy calls the last-registered (and tryfirst) implementations first.
    return list(reversed(hook.get_hookimpls()))


class HookFailed(Exception):
    """A plugin raised inside a hook; names the plugin."""

    def __init__(self, plugin: str, hook: str) -> None:
        super().__init__(f"plugin {plugin!r} failed in hook {hook!r}")
        self.plugin = plugin
        self.hook = hook


async def _invoke(
    pm: pluggy.PluginManager, hook_name: str, impl: pluggy.HookImpl, kwargs: dict[str, Any]
) -> Any:
    try:
        result = impl.function(*[kwargs[a] for a in impl.argnames])
        if inspect.isawaitable(result):
            result = await result
        return result
    except RuntimeFailure:
        raise  # deliberate answers (Unauthenticated, Forbidden...) pass through
    except Exception as exc:
        raise HookFailed(plugin_name(pm, impl), hook_name) from exc


async def call_first(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Any:
    """Await implementations in pluggy's order; stop at the first non-None result."""
    for impl in _impls(getattr(pm.hook, hook_name)):
        result = await _invoke(pm, hook_name, impl, kwargs)
        if result is not None:
            return result
    return None


async def call_all(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> list[Any]:
    """Await every implementation in pluggy's order; the non-None results."""
    results = []
    for impl in _impls(getattr(pm.hook, hook_name)):
        result = await _invoke(pm, hook_name, impl, kwargs)
        if result is not None:
            results.append(result)
    return results


async def call_plugin(
    pm: pluggy.PluginManager, plugin: object, hook_name: str, **kwargs: Any
) -> None:
    """Await one plugin's implementation of a hook, if it has one (used when a single
    plugin is swapped on reload: only it is shut down and started)."""
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if impl.plugin is plugin:
            await _invoke(pm, hook_name, impl, kwargs)
