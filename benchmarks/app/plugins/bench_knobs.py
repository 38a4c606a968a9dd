"""Ablation switches for benchmarks/profile_calls.py; with BENCH_KNOBS unset it does nothing.

BENCH_KNOBS is a comma-separated list, applied once at startup (never per call):

- `quiet_call_log`: `logging.getLogger("runtime.calls").setLevel(WARNING)`, the documented
  way to silence the per-call log line (the hook still runs and returns early);
- `no_call_log`, `no_metrics`: unregister the built-in call_log / metrics plugins, so their
  `call_finished` hooks no longer run at all;
- `gc_freeze`: `gc.freeze()` once started, so the cyclic GC stops rescanning the objects
  that loading the runtime, its plugins and the app created;
- `watch_step_2ms`: the reloader's watcher batches with step_ms=2 instead of its default
  (an experiment on runtime internals, for bench_reload --knobs only).
"""

import gc
import logging
import os

from runtime import hookimpl

KNOBS = {k.strip() for k in os.environ.get("BENCH_KNOBS", "").split(",") if k.strip()}


@hookimpl
async def startup(runtime):
    if "quiet_call_log" in KNOBS:
        logging.getLogger("runtime.calls").setLevel(logging.WARNING)
    for knob, plugin in (("no_call_log", "call_log"), ("no_metrics", "metrics")):
        if knob in KNOBS:
            name = f"default:runtime.defaults.{plugin}"
            if runtime.plugins.get_plugin(name) is None:
                raise RuntimeError(f"BENCH_KNOBS={knob}: no plugin {name!r} to unregister")
            runtime.plugins.unregister(name=name)
    if "watch_step_2ms" in KNOBS:
        import functools
        import importlib

        reloader = importlib.import_module("runtime.reload.reloader")
        reloader.batches = functools.partial(reloader.batches, step_ms=2)
    if "gc_freeze" in KNOBS:
        gc.collect()
        gc.freeze()
