"""Batches of changed paths from inotify (watchfiles), coalescing bursts of saves.

An editor's write-then-rename or a `git checkout` of many files arrives as a burst of events;
watchfiles groups events until `step_ms` passes with no new one (bounded by `debounce_ms`),
so a burst becomes one batch and one reload. Polling is never used: it misses rapid rewrites.

The source folders are watched recursively; the folder holding schema.json is watched
non-recursively (it is usually the project root, whose `.runtime/` holds a busy database).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from watchfiles import awatch

from runtime.reload.filter import SourceFilter

# How long a batch from one watcher waits for the other's (schema.json saved together with a
# module); within one watcher, `step_ms` of quiet ends a burst.
MERGE_WINDOW_S = 0.010


async def _pump(
    paths: list[Path],
    recursive: bool,
    flt: SourceFilter,
    queue: asyncio.Queue[set[str]],
    stop: asyncio.Event,
    debounce_ms: int,
    step_ms: int,
) -> None:
    async for changes in awatch(
        *paths,
        watch_filter=flt,
        debounce=debounce_ms,
        step=step_ms,
        stop_event=stop,
        rust_timeout=500,
        recursive=recursive,
        force_polling=False,
    ):
        await queue.put({path for _change, path in changes})


def _roots(folders: list[Path], schema_path: Path) -> tuple[list[Path], Path]:
    return [p.resolve() for p in folders if p.exists()], schema_path.resolve().parent


async def batches(
    folders: list[Path],
    schema_path: Path,
    stop: asyncio.Event,
    *,
    debounce_ms: int = 300,
    step_ms: int = 3,
) -> AsyncIterator[set[str]]:
    """Yield sets of changed paths until `stop` is set."""
    flt = SourceFilter(schema_path)
    queue: asyncio.Queue[set[str]] = asyncio.Queue()
    sources, schema_dir = _roots(folders, schema_path)
    tasks = []
    if sources:
        tasks.append(
            asyncio.create_task(_pump(sources, True, flt, queue, stop, debounce_ms, step_ms))
        )
    if not any(schema_dir == s or schema_dir.is_relative_to(s) for s in sources):
        tasks.append(
            asyncio.create_task(_pump([schema_dir], False, flt, queue, stop, debounce_ms, step_ms))
        )
    stopped = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            batch = getter.result()
            # a burst that touched both watchers arrives as two batches: merge them
            if len(tasks) > 1:
                await asyncio.sleep(MERGE_WINDOW_S)
            while not queue.empty():
                batch |= queue.get_nowait()
            yield batch
    finally:
        for task in (*tasks, stopped):
            task.cancel()
        for task in (*tasks, stopped):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
