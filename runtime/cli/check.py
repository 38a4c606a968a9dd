"""`swarm-runtime check`: validate schema.json, app functions and plugins without serving."""

from __future__ import annotations

import argparse
import sys

from runtime.cli.options import add_app_options, settings_from_args
from runtime.errors import LoadError
from runtime.registry import build_registry


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check", help="validate schema.json, functions and plugins; exit 1 on problems"
    )
    add_app_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from runtime.defaults import DEFAULT_PLUGINS
    from runtime.plugins import make_plugin_manager

    settings = settings_from_args(args)
    problems: list[str] = []
    registry = None
    try:
        registry = build_registry(settings.functions_dir, settings.schema_path, 1)
    except LoadError as exc:
        problems.extend(exc.problems)
    try:
        make_plugin_manager(settings.plugins_dir, defaults=DEFAULT_PLUGINS)
    except LoadError as exc:
        problems.extend(exc.problems)
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    assert registry is not None
    print(f"ok: {len(registry.functions)} functions, {len(registry.tables)} tables")
    return 0
