"""Running PostgreSQL's programs as an unprivileged user when we are root.

initdb and postgres refuse to run as root, so as root they run as the owner of an existing
cluster, else ``postgres``, else ``nobody``. That user must be able to traverse to the binaries
and the data dir; `_blocked_at` names the folder in the way.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import EmbeddedPostgresError


@dataclass(frozen=True)
class _Account:
    """The unprivileged user initdb and postgres run as when we are root."""

    name: str
    uid: int
    gid: int


def _default_account() -> _Account | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return _Account(name, entry.pw_uid, entry.pw_gid)
    raise EmbeddedPostgresError(
        "PostgreSQL refuses to run as root and neither a 'postgres' nor a 'nobody' user exists; "
        "create one (`useradd --system postgres`) or run as a regular user"
    )


def _owner_account(path: Path) -> _Account | None:
    """The account owning an existing cluster (so root can start a user's cluster as them)."""
    try:
        uid = path.stat().st_uid
        entry = pwd.getpwuid(uid)
    except (OSError, KeyError):
        return None
    return None if uid == 0 else _Account(entry.pw_name, uid, entry.pw_gid)


def _blocked_at(path: Path, account: _Account | None) -> Path | None:
    """The first folder on `path`'s way (itself included) that `account` cannot traverse.

    Only the account's primary group counts: commands run with ``extra_groups=[]``.
    """
    if account is None or account.uid == 0:
        return None
    for folder in reversed([path, *path.parents]):
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            return None  # we will create the rest
        if st.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


def _run(
    args: list[str | Path], account: _Account | None, cwd: Path, *, timeout: float
) -> tuple[int, str]:
    """Run a PostgreSQL program (as `account` if given); its exit code and output.

    Output goes through a file, not a pipe: the server pg_ctl starts must not hold our pipe.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            done = subprocess.run(
                [str(arg) for arg in args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
                user=None if account is None else account.uid,
                group=None if account is None else account.gid,
                extra_groups=None if account is None else [],
            )
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(
                f"`{Path(args[0]).name}` did not finish within {timeout:.0f} s"
            ) from None
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot run {args[0]}: {exc}") from exc
        out.seek(0)
        return done.returncode, out.read().strip()
