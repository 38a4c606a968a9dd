"""`swarm-runtime call NAME [JSON_ARGS]` and `swarm-runtime seed --demo`: run a function
without serving.

Both build a Runtime (pool, schema, app functions, plugins' startup hooks), call the function
as the system identity (internal functions allowed, no authorization), print the JSON result
and stop. `seed --demo` is `call seed.demo` with the tenants given by `--tenant`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Any

import msgspec

from runtime.cli.options import (
    add_app_options,
    add_database_option,
    database_url_or_embedded,
    settings_from_args,
)
from runtime.config import Settings
from runtime.errors import LoadError, RuntimeFailure


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    call = commands.add_parser(
        "call", help="run one function (internal ones too) as the system identity; print the result"
    )
    call.add_argument("name", help="function name, e.g. tickets.get_stats")
    call.add_argument("args", nargs="?", default="{}", help="arguments, a JSON object (default {})")
    add_app_options(call)
    add_database_option(call)
    call.set_defaults(handler=run_call)

    seed = commands.add_parser(
        "seed", help="load a data set (--demo: tenants, users, projects, tickets)"
    )
    seed.add_argument(
        "--demo", action="store_true", required=True, help="the demo data set (seed.demo)"
    )
    seed.add_argument(
        "--tenant",
        action="append",
        dest="tenants",
        metavar="TENANT",
        help="seed this tenant (repeatable; default: the demo's tenants)",
    )
    seed.add_argument("--tickets-per-project", type=int, help="tickets per project (default 50)")
    add_app_options(seed)
    add_database_option(seed)
    seed.set_defaults(handler=run_seed)


async def call_function(
    settings: Settings, database_url: str, name: str, args: Mapping[str, Any]
) -> Any:
    """Start a runtime (no reload), call `name` as the system identity, stop it."""
    from runtime.engine import Runtime
    from runtime.types import SYSTEM

    runtime = Runtime(settings, database_url)
    await runtime.start()
    try:
        return await runtime.call_internal(name, args, SYSTEM)
    finally:
        await runtime.stop()


def _run(args: argparse.Namespace, name: str, call_args: Mapping[str, Any]) -> tuple[int, Any]:
    settings = settings_from_args(args, reload=False)
    try:
        url = database_url_or_embedded(settings, quiet=True)
        value = asyncio.run(call_function(settings, url, name, call_args))
    except LoadError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1, None
    except RuntimeFailure as exc:
        print(msgspec.json.encode(exc.to_body()).decode(), file=sys.stderr)
        return 1, None
    return 0, value


def _print_json(value: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def run_call(args: argparse.Namespace) -> int:
    try:
        call_args = msgspec.json.decode(args.args)
    except msgspec.DecodeError as exc:
        print(f"error: JSON_ARGS is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(call_args, dict):
        print("error: JSON_ARGS must be a JSON object", file=sys.stderr)
        return 2
    code, value = _run(args, args.name, call_args)
    if code == 0:
        _print_json(value)
    return code


def run_seed(args: argparse.Namespace) -> int:
    call_args: dict[str, Any] = {}
    if args.tenants:
        call_args["tenants"] = args.tenants
    if args.tickets_per_project is not None:
        call_args["tickets_per_project"] = args.tickets_per_project
    code, value = _run(args, "seed.demo", call_args)
    if code != 0:
        return code
    for tenant, report in (value or {}).get("tenants", {}).items():
        if not report.get("created"):
            print(f"{tenant}: skipped ({report.get('reason', 'nothing to do')})")
            continue
        states = ", ".join(f"{s} {n}" for s, n in report.get("by_state", {}).items())
        users, projects = report.get("users", []), report.get("projects", [])
        print(f"{tenant}: {len(users)} users ({', '.join(users)})")
        print(f"{tenant}: {len(projects)} projects ({', '.join(projects)})")
        print(f"{tenant}: {report.get('tickets', 0)} tickets ({states})")
    return 0
