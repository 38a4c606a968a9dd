"""Flags shared by the commands; each overrides its environment variable (DESIGN §9)."""

from __future__ import annotations

import argparse
import atexit
import sys
from pathlib import Path

from runtime.config import Settings


def add_app_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--functions", type=Path, help="app functions folder (RUNTIME_FUNCTIONS, ./app_functions)"
    )
    parser.add_argument(
        "--schema", type=Path, help="schema.json path (RUNTIME_SCHEMA, ./schema.json)"
    )
    parser.add_argument("--plugins", type=Path, help="plugins folder (RUNTIME_PLUGINS, ./plugins)")
    parser.add_argument(
        "--data", type=Path, help="local state and embedded cluster (RUNTIME_DATA, ./.runtime)"
    )


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (DATABASE_URL); unset: embedded cluster"
    )


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (RUNTIME_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (RUNTIME_PORT, 3210)")
    parser.add_argument("--workers", type=int, help="worker processes (RUNTIME_WORKERS, 1)")
    parser.add_argument(
        "--allow-destructive",
        action="store_true",
        default=None,
        help="apply destructive schema changes (drops, type changes)",
    )


def settings_from_args(args: argparse.Namespace, **extra: object) -> Settings:
    return Settings.from_env(
        functions_dir=getattr(args, "functions", None),
        schema_path=getattr(args, "schema", None),
        plugins_dir=getattr(args, "plugins", None),
        data_dir=getattr(args, "data", None),
        database_url=getattr(args, "database_url", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        workers=getattr(args, "workers", None),
        allow_destructive=getattr(args, "allow_destructive", None),
        **extra,
    )


def database_url_or_embedded(settings: Settings, *, quiet: bool = False) -> str:
    """DATABASE_URL, or start the embedded cluster under $RUNTIME_DATA/pg (stopped at exit)."""
    if settings.database_url:
        return settings.database_url
    from runtime.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

    cluster = EmbeddedPostgres(
        settings.data_dir / "pg", log=(lambda _m: None) if quiet else _stderr
    )
    try:
        url = cluster.start()
    except EmbeddedPostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    atexit.register(cluster.stop)
    return url


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
