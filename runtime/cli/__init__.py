"""`swarm-runtime`: one module per command group; each exposes `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from runtime import __version__
from runtime.cli import auth, backup, call, check, loadtest, migrate, serve, users

COMMAND_MODULES = [serve, check, migrate, auth, call, users, backup, loadtest]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarm-runtime",
        description="Self-hosted, Convex-style function runtime on PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"swarm-runtime {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except KeyboardInterrupt:  # Ctrl-C after a graceful shutdown is a clean exit
        return 0
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
