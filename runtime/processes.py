"""Child process groups for the VM drivers: spawn, liveness, and termination with a grace period.

`spawn_group` starts a command in its own session, so it leads a new process group whose id
is its pid; `terminate_group` sends that group SIGTERM, waits up to a grace period for all of
it (the leader and whatever it forked), then SIGKILLs what is left; `group_alive` tells
whether any live (non-zombie) process is still in the group. A group is signalled only while
its id cannot have been reused. Every wait is bounded. Plugins reach these through `runtime`.

Another server process on the same host (a sibling worker) cannot wait for a child it did
not start: `start_time` and `terminate_sibling_group` let it stop a group it knows by its id
and its leader's start time (which tells the leader from a later process given the same pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "group_alive",
    "leader_running",
    "sibling_group_alive",
    "spawn_group",
    "start_time",
    "terminate_group",
    "terminate_sibling_group",
]

KILL_WAIT_S = 5.0  # how long to wait for the group to vanish after SIGKILL
POLL_S = 0.05


async def spawn_group(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout: int | IO[Any],
    stderr: int | IO[Any],
) -> asyncio.subprocess.Process:
    """Start `argv` with stdin from /dev/null in a new session, hence its own process group.

    The group id is the child's pid. `stdout` and `stderr` are files (the caller may close
    them once this returns) or `asyncio.subprocess` constants such as STDOUT.
    """
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )


async def terminate_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the group led by `proc`, wait up to `grace` s for all of it, then SIGKILL.

    The group id is the leader's pid (the child was started in a new session). Waits are
    bounded: at most `grace` + KILL_WAIT_S.
    """
    loop = asyncio.get_running_loop()
    pgid = proc.pid
    _signal_group(proc, signal.SIGTERM)
    deadline = loop.time() + grace
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    while group_alive(pgid) and loop.time() < deadline:  # noqa: ASYNC110 - polls /proc
        await asyncio.sleep(POLL_S)
    _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_WAIT_S)
    deadline = loop.time() + KILL_WAIT_S
    while group_alive(pgid) and loop.time() < deadline:  # noqa: ASYNC110 - polls /proc
        await asyncio.sleep(POLL_S)


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in process group `pgid`.

    Reads /proc so that zombies (e.g. orphaned grandchildren whose new parent has not reaped
    them yet) do not count; without /proc, falls back to `killpg(pgid, 0)`.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for name in entries:
        fields = _stat(int(name)) if name.isdigit() else None  # state, ppid, pgrp, ...
        if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22), or None
    when there is no such process (a zombie still has one)."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def leader_running(pid: int, started: int) -> bool:
    """True while the process that started at `started` with this pid has not exited."""
    fields = _stat(pid)
    return (
        fields is not None
        and len(fields) > 19
        and int(fields[19]) == started
        and fields[0] not in (b"Z", b"X")
    )


def _stat(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat after "pid (comm) " (comm may hold spaces and parentheses): state
    first; None when there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def sibling_group_alive(pgid: int, leader_start: int) -> bool:
    """True while the group led by the process that started at `leader_start` has a live
    member. When a process with that pid but another start time exists, the id was reused
    and the group is gone; while any member lives, the kernel cannot reuse the id."""
    started = start_time(pgid)
    if started is not None and started != leader_start:
        return False
    return group_alive(pgid)


async def terminate_sibling_group(pgid: int, leader_start: int, grace: float) -> None:
    """`terminate_group` for a group this process did not start (so cannot wait for): SIGTERM,
    up to `grace` s for the group to vanish, SIGKILL, up to KILL_WAIT_S more. Its parent
    reaps the leader; every signal is sent only while the group is still that one."""
    loop = asyncio.get_running_loop()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
        if not sibling_group_alive(pgid, leader_start):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = loop.time() + wait
        while sibling_group_alive(pgid, leader_start) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the group led by `proc`, but only while its id cannot have been reused.

    The group id stays reserved while the leader is unreaped or any member lives; once the
    group is gone the number could belong to someone else, so it is left alone.
    """
    if proc.returncode is None or group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
