"""`swarm-runtime serve` (production) and `swarm-runtime dev` (hot reload, embedded PostgreSQL)."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
from pathlib import Path

import uvicorn

from runtime.cli.options import (
    add_app_options,
    add_database_option,
    add_server_options,
    database_url_or_embedded,
    settings_from_args,
)
from runtime.config import Settings
from runtime.errors import LoadError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="serve app_functions (production)")
    dev = commands.add_parser(
        "dev", help="serve with hot reload, dev token and the embedded PostgreSQL"
    )
    for parser in (serve, dev):
        add_app_options(parser)
        add_database_option(parser)
        add_server_options(parser)
    serve.add_argument("--reload", action="store_true", help="watch files and hot-reload")
    serve.set_defaults(handler=run_serve)
    dev.set_defaults(handler=run_dev)


def _export(settings: Settings, database_url: str) -> None:
    """Hand the effective settings to worker processes through their environment."""
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "RUNTIME_FUNCTIONS": str(settings.functions_dir),
            "RUNTIME_SCHEMA": str(settings.schema_path),
            "RUNTIME_PLUGINS": str(settings.plugins_dir),
            "RUNTIME_DATA": str(settings.data_dir),
            "RUNTIME_DEV": "1" if settings.dev else "0",
            "RUNTIME_RELOAD": "1" if settings.reload else "0",
            "RUNTIME_FREEZE_GC": "1" if settings.freeze_gc else "0",
            "RUNTIME_ALLOW_DESTRUCTIVE": "1" if settings.allow_destructive else "0",
            "RUNTIME_LOG_FORMAT": settings.log_format,
        }
    )


def _serve(settings: Settings, database_url: str) -> int:
    from runtime.logs import configure_logging

    configure_logging(settings)
    if settings.workers > 1:
        _export(settings, database_url)
        _metrics_dir(settings.data_dir)
        uvicorn.run(
            "runtime.http.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=30,
        )
        return 0
    from runtime.http.app import create_app

    try:
        app = create_app(settings, database_url)
    except LoadError as exc:
        _print_problems(exc)
        return 1
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    # On SIGTERM uvicorn stops accepting, lets in-flight requests finish (up to the graceful
    # timeout), runs the shutdown, then re-raises the signal once its own handler is gone:
    # this no-op receives it, so a drained stop exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    server.run()
    return 0 if server.started else 1


def _metrics_dir(data_dir: Path) -> None:
    """Prometheus multiprocess mode for the workers: a fresh folder, set before they start.

    A folder the operator set in PROMETHEUS_MULTIPROC_DIR is used as it is (theirs to wipe).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = (data_dir / "metrics" / f"serve-{os.getpid()}").absolute()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _print_problems(exc: LoadError) -> None:
    print(f"error: cannot start, {len(exc.problems)} problem(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, reload=args.reload or None, freeze_gc=True)
    return _serve(settings, database_url_or_embedded(settings))


def run_dev(args: argparse.Namespace) -> int:
    from runtime.defaults.dev_token import ensure_dev_token

    settings = settings_from_args(args, dev=True, reload=True, log_format="text", freeze_gc=True)
    url = database_url_or_embedded(settings)
    token = ensure_dev_token(settings.data_dir)
    base = f"http://{settings.host}:{settings.port}"
    print(
        f"\n  Swarm Runtime (dev) serving {settings.functions_dir}/ on {base}\n"
        f"  dev admin token: {token}\n"
        f"  try: curl -s -X POST {base}/fn/<name> -H 'authorization: Bearer {token}' -d '{{}}'\n",
        file=sys.stderr,
        flush=True,
    )
    return _serve(settings, url)
