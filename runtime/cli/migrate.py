"""`swarm-runtime migrate`: apply schema.json's additive changes (or forced destructive ones)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from runtime.cli.options import (
    add_app_options,
    add_database_option,
    database_url_or_embedded,
    settings_from_args,
)
from runtime.errors import LoadError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("migrate", help="apply schema.json to the database and exit")
    add_app_options(parser)
    add_database_option(parser)
    parser.add_argument(
        "--allow-destructive",
        action="store_true",
        default=None,
        help="also apply destructive changes (drops, type changes)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from runtime.db.migrate import migrate_once
    from runtime.schema import load_schema

    settings = settings_from_args(args)
    try:
        schema = load_schema(settings.schema_path)
        url = database_url_or_embedded(settings)
        applied = asyncio.run(
            migrate_once(
                url, schema, allow_destructive=settings.allow_destructive, dry_run=args.dry_run
            )
        )
    except LoadError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    if not applied:
        print("schema is up to date")
    for statement in applied:
        print(("would run: " if args.dry_run else "applied: ") + statement)
    return 0
