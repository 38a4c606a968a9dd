"""`swarm-runtime user create`: make a user (the first admin of a tenant, typically).

It starts a Runtime against the database (pool, schema, app functions, plugins' startup
hooks), calls the internal function `users.create` as the system identity (the password is
hashed with argon2id there, like every other path that creates users), prints the new user
without its hash, and stops. The password comes from `--password` (visible to other local
users in the process list: prefer the others), else RUNTIME_USER_PASSWORD, else a prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from typing import Any

import msgspec

from runtime.cli.options import (
    add_app_options,
    add_database_option,
    database_url_or_embedded,
    settings_from_args,
)
from runtime.errors import LoadError, RuntimeFailure

PASSWORD_ENV = "RUNTIME_USER_PASSWORD"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = commands.add_parser("user", help="manage users (e.g. create the first admin)")
    actions = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help=f"create a user; the password comes from --password, {PASSWORD_ENV} or a prompt",
    )
    create.add_argument("--email", required=True, help="sign-in email (unique)")
    create.add_argument("--role", required=True, help="admin, operator, viewer or agent")
    create.add_argument("--tenant", required=True, help="the tenant the user belongs to")
    create.add_argument("--name", help="display name")
    create.add_argument("--password", help=f"the password (prefer {PASSWORD_ENV} or the prompt)")
    add_app_options(create)
    add_database_option(create)
    create.set_defaults(handler=run_create)


def _password(args: argparse.Namespace) -> str:
    """The password from the flag, the environment or a prompt; ValueError says what's wrong."""
    if args.password:
        return str(args.password)
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ValueError(
            f"no password: pass --password, set {PASSWORD_ENV}, or run in a terminal to be prompted"
        )
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise ValueError("the passwords differ")
    return first


def run_create(args: argparse.Namespace) -> int:
    from runtime.cli.call import call_function

    try:
        password = _password(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    call_args: dict[str, Any] = {
        "email": args.email,
        "password": password,
        "role": args.role,
        "tenant_id": args.tenant,
    }
    if args.name:
        call_args["name"] = args.name
    settings = settings_from_args(args, reload=False)
    try:
        url = database_url_or_embedded(settings, quiet=True)
        user = asyncio.run(call_function(settings, url, "users.create", call_args))
    except LoadError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except RuntimeFailure as exc:
        print(msgspec.json.encode(exc.to_body()).decode(), file=sys.stderr)
        return 1
    print(msgspec.json.format(msgspec.json.encode(user), indent=2).decode())
    return 0
