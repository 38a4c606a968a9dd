"""Hot reload: watch app_functions/, plugins/ and schema.json; build the new registry off to
the side; swap it in atomically. A broken save keeps the previous version serving.

`filter.py` decides which paths matter, `watcher.py` turns file events into batches,
`reloader.py` builds, migrates and swaps, and reports each outcome.
"""

from runtime.reload.reloader import Reloader, ReloadOutcome

__all__ = ["ReloadOutcome", "Reloader"]
