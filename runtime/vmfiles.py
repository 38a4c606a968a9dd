"""The files in a VM's directory through which every server process on the host knows it.

A VM driver that runs each VM as a child process group keeps its handle in memory, in the
server process that started it. The others (the other workers of `serve --workers N`, or a
process started after that one died) find the VM through its directory instead:

    vm.json          the record: the driver's name, the host (this boot of the kernel and
                     this pid namespace: outside them a pid means nothing), the process group
                     id, the leader's start time (which tells the leader from a later process
                     given the same pid, None if it had already exited), and whatever else
                     the driver needs to reach the VM again; written once the VM runs
    exit.json        {"exit_code": N}, written by the starting process when the leader exits
    stop-requested   left by whichever process asked it to stop, so that all of them report
                     an exit caused by that request as `stopped`, not `error`

Each JSON file is written whole or not at all (a temporary file renamed into place).
`SiblingVM` is what a driver holds for a VM it found this way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.processes import leader_running, sibling_group_alive

__all__ = [
    "SiblingVM",
    "host_identity",
    "mark_stop_requested",
    "read_exit",
    "read_record",
    "stop_was_requested",
    "vm_directory",
    "write_exit",
    "write_record",
]

EXIT_RECORD_WAIT_S = 1.0  # a leader's end and its exit.json are this far apart at most
RECORD = "vm.json"
EXIT = "exit.json"
STOP_MARK = "stop-requested"
_VM_ID = re.compile(r"[a-z]+-[0-9a-f]{12}")  # e.g. proc-0123456789ab, fc-0123456789ab


def vm_directory(data_dir: Path, vm_id: str) -> Path | None:
    """`<data_dir>/vms/<vm_id>` for a well-formed id (nothing else can name a path)."""
    return data_dir / "vms" / vm_id if _VM_ID.fullmatch(vm_id) else None


@functools.cache
def host_identity() -> str | None:
    """This boot of this host and this pid namespace (None without /proc): a record made
    under another one (a shared RUNTIME_DATA, a reboot, another container) is not ours."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}/{pid_namespace}"


def write_record(workdir: Path, record: dict[str, Any]) -> None:
    _write_json(workdir / RECORD, {**record, "host": host_identity()})


def read_record(workdir: Path, driver: str) -> dict[str, Any] | None:
    """The record of a VM `driver` started on this host, or None (none, another driver's,
    another host's, or no group id)."""
    record = _read_json(workdir / RECORD)
    if record is None or record.get("driver") != driver:
        return None
    if host_identity() is None or record.get("host") != host_identity():
        return None
    if not isinstance(record.get("pgid"), int):
        return None
    if not isinstance(record.get("leader_start"), int | None):
        return None
    return record


def write_exit(workdir: Path, exit_code: int | None) -> None:
    _write_json(workdir / EXIT, {"exit_code": exit_code})


def read_exit(workdir: Path) -> dict[str, Any] | None:
    """`{"exit_code": N}` once the starting process saw the leader exit, else None."""
    return _read_json(workdir / EXIT)


def mark_stop_requested(workdir: Path) -> None:
    (workdir / STOP_MARK).touch()


def stop_was_requested(workdir: Path) -> bool:
    return (workdir / STOP_MARK).exists()


@dataclass(eq=False)
class SiblingVM:
    """A VM another server process on this host started, as a driver knows it: its record."""

    vm_id: str
    record: dict[str, Any]
    workdir: Path
    stop_requested: bool = False  # by this process
    stopping: asyncio.Task[None] | None = None
    exit_unknown: bool = False  # its group is gone and no exit.json came: its starter is gone

    def has_live_group(self) -> bool:
        started = self.record["leader_start"]  # None: the leader exited before it was read
        return started is not None and sibling_group_alive(self.record["pgid"], started)

    def leader_is_running(self) -> bool:
        """Not exited yet: a stop now is a requested one (an earlier exit keeps its verdict)."""
        started = self.record["leader_start"]
        return (
            started is not None
            and leader_running(self.record["pgid"], started)
            and read_exit(self.workdir) is None
        )

    def exit(self) -> dict[str, Any] | None:
        return read_exit(self.workdir)

    async def settle(self) -> None:
        """Between the leader's end and its exit.json (its starter reaps it, then writes)
        wait once, up to EXIT_RECORD_WAIT_S, before calling the exit unknown."""
        if self.exit_unknown or self.exit() is not None or self.has_live_group():
            return
        deadline = time.monotonic() + EXIT_RECORD_WAIT_S
        while self.exit() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        self.exit_unknown = self.exit() is None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value))
    partial.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
