"""Who holds the cluster: our flocks on ``.lock`` and ``.users``, and the postmaster's pid.

A postmaster.pid names a live server only while its process is alive, not a zombie, and works
in the cluster's folder (a recycled pid does not).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import EmbeddedPostgresError


def _flock(path: Path, operation: int, timeout: float) -> int:
    """Open `path` and flock it, waiting at most `timeout` seconds; returns the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise EmbeddedPostgresError(
                    f"Timed out after {timeout:.0f} s waiting for the lock {path}"
                ) from None
            time.sleep(0.05)


def _processes_in(pgdata: Path) -> list[int]:
    """Live processes working in `pgdata` (a killed postmaster's children, until they exit)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _pid_alive_in(int(entry.name), pgdata, unknown=False):
            pids.append(int(entry.name))
    return pids


def _pid_alive_in(pid: int, pgdata: Path, *, unknown: bool = True) -> bool:
    """Whether `pid` is a live (not zombie) process whose working folder is `pgdata`.

    The postmaster chdirs into its data dir; a different process with a recycled pid does not.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return unknown  # someone else's live process: by default, assume it is the server
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        return os.path.samestat(os.stat(f"/proc/{pid}/cwd"), os.stat(pgdata))
    except FileNotFoundError:
        return False  # it just exited
    except (OSError, IndexError):
        return unknown  # cannot tell: by default, leave it to pg_ctl
