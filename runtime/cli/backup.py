"""`swarm-runtime backup` and `swarm-runtime restore FILE` (runtime/backup.py does the work).

Both connect with --database-url / DATABASE_URL, or to the embedded cluster under
$RUNTIME_DATA/pg (dev). docs/operations.md describes them as the rollback path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli.options import add_database_option, database_url_or_embedded, settings_from_args


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = commands.add_parser(
        "backup",
        help="pg_dump the database (custom format) with a sidecar of row counts",
        description=(
            "Dump the database with pg_dump -Fc into FILE, or into a timestamped file "
            "<database>-<UTC time>.dump in --dir; FILE.json records every table's row count "
            "(taken in the dump's own snapshot) and the dump's SHA-256 for `restore`."
        ),
    )
    backup.add_argument("file", nargs="?", type=Path, help="write exactly this file")
    backup.add_argument(
        "--dir", type=Path, help="folder for timestamped backups (default $RUNTIME_DATA/backups)"
    )
    backup.add_argument(
        "--keep",
        type=int,
        metavar="N",
        help="then delete this database's oldest backups in --dir beyond the newest N",
    )
    backup.set_defaults(handler=run_backup)

    restore = commands.add_parser(
        "restore",
        help="pg_restore a backup into an empty database and check every table's row count",
        description=(
            "Restore FILE (made by `swarm-runtime backup`) into the database, which must be "
            "empty (no tables): checks the dump's SHA-256, runs pg_restore in one "
            "transaction, then compares every table's row count with FILE.json."
        ),
    )
    restore.add_argument("file", type=Path, help="the .dump file")
    restore.add_argument(
        "--no-verify",
        action="store_true",
        help="restore a dump without a sidecar (no checksum or row-count check)",
    )
    restore.set_defaults(handler=run_restore)
    for parser in (backup, restore):
        parser.add_argument(
            "--data", type=Path, help="local state and embedded cluster (RUNTIME_DATA, ./.runtime)"
        )
        add_database_option(parser)


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def run_backup(args: argparse.Namespace) -> int:
    from runtime.backup import BackupError, backup

    settings = settings_from_args(args)
    if args.file is not None and (args.dir is not None or args.keep is not None):
        return _error("give FILE, or --dir/--keep, not both", 2)
    url = database_url_or_embedded(settings, quiet=True)
    try:
        if args.file is not None:
            result = backup(url, file=args.file)
        else:
            folder = args.dir if args.dir is not None else settings.data_dir / "backups"
            result = backup(url, folder=folder, keep=args.keep)
    except BackupError as exc:
        return _error(str(exc), 1)
    rows = sum(result.tables.values())
    print(result.dump)
    print(
        f"backed up {len(result.tables)} tables, {rows} rows, {_size(result.size)} with "
        f"pg_dump {result.tool.version} (server {result.server_version}); "
        f"row counts in {result.sidecar.name}",
        file=sys.stderr,
    )
    for old in result.deleted:
        print(f"deleted old backup {old}", file=sys.stderr)
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from runtime.backup import BackupError, restore

    url = database_url_or_embedded(settings_from_args(args), quiet=True)
    try:
        result = restore(url, args.file, verify=not args.no_verify)
    except BackupError as exc:
        return _error(str(exc), 2)
    width = max((len(name) for name in result.tables), default=5)
    expected = result.expected or {}
    print(f"{'table':<{width}}  {'backup':>10}  {'restored':>10}")
    for name in sorted(set(result.tables) | set(expected)):
        want = expected.get(name)
        got = result.tables.get(name)
        flag = "" if result.expected is None or want == got else "  MISMATCH"
        shown = "-" if want is None else str(want)
        print(f"{name:<{width}}  {shown:>10}  {'-' if got is None else got:>10}{flag}")
    if result.mismatches:
        return _error(
            f"restored with pg_restore {result.tool.version}, but {len(result.mismatches)} "
            "table(s) differ from the backup's row counts",
            1,
        )
    checked = "every table's row count matches" if result.expected is not None else "unchecked"
    print(f"restored {args.file} with pg_restore {result.tool.version}: {checked}", file=sys.stderr)
    return 0
