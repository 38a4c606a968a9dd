"""`swarm-runtime token` (sign a JWT) and `swarm-runtime apikey create|list|revoke`.

`token` needs only RUNTIME_JWT_SECRET (and RUNTIME_JWT_ISSUER / RUNTIME_JWT_AUDIENCE when the
server checks them). `apikey` connects with --database-url / DATABASE_URL, or starts the
embedded cluster under $RUNTIME_DATA/pg, and works on table api_keys of schema.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import psycopg

from runtime.cli.options import add_database_option, settings_from_args


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token", help="print a signed JWT (HS256 with RUNTIME_JWT_SECRET) for ops and tests"
    )
    token.add_argument("--user", required=True, help="the `sub` claim (user id)")
    token.add_argument("--tenant", help="the `tenant_id` claim")
    token.add_argument(
        "--role",
        action="append",
        required=True,
        dest="roles",
        help="a role (repeat for several): admin, operator, viewer, agent",
    )
    token.add_argument("--ttl", default="1h", help="lifetime: 900, 15m, 1h, 7d (default 1h)")
    token.set_defaults(handler=run_token)

    apikey = commands.add_parser("apikey", help="create, list and revoke API keys")
    actions = apikey.add_subparsers(dest="apikey_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--tenant", required=True, help="tenant the key acts for")
    create.add_argument("--role", required=True, help="the key's role, e.g. agent")
    create.add_argument("--name", required=True, help="what holds the key, e.g. vm-7")
    create.set_defaults(handler=run_create)
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.set_defaults(handler=run_list)
    revoke = actions.add_parser("revoke", help="revoke a key; it fails from the next call on")
    revoke.add_argument("key_id", help="the key id (the part after swk_), as `apikey list` shows")
    revoke.set_defaults(handler=run_revoke)
    for parser in (create, listing, revoke):
        parser.add_argument(
            "--data", type=Path, help="local state and embedded cluster (RUNTIME_DATA, ./.runtime)"
        )
        add_database_option(parser)


def _error(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run_token(args: argparse.Namespace) -> int:
    from runtime.auth.tokens import TokenConfigError, parse_duration, sign_token_from_env

    try:
        ttl_s = parse_duration(args.ttl)
        token = sign_token_from_env(
            user_id=args.user, tenant_id=args.tenant, roles=args.roles, ttl_s=ttl_s
        )
    except (TokenConfigError, ValueError) as exc:
        return _error(str(exc), 2)
    print(token)
    return 0


def _connect(args: argparse.Namespace) -> psycopg.Connection[Any]:
    from runtime.cli.options import database_url_or_embedded

    url = database_url_or_embedded(settings_from_args(args), quiet=True)
    return psycopg.connect(url, autocommit=True)


def run_create(args: argparse.Namespace) -> int:
    from runtime.auth.keystore import MissingTable, create_key, known_roles

    try:
        with _connect(args) as conn:
            roles = known_roles(conn)
            if roles is not None and args.role not in roles:
                print(
                    f"warning: role {args.role!r} is not in table roles ({', '.join(roles)}); "
                    "calls that need a permission will be refused",
                    file=sys.stderr,
                )
            key = create_key(conn, tenant_id=args.tenant, role=args.role, name=args.name)
    except (MissingTable, psycopg.Error) as exc:
        return _error(str(exc))
    print(key.token)
    print(
        f"created API key {key.key_id} ({args.name}, tenant {args.tenant}, role {args.role}); "
        "store it now, it is not shown again",
        file=sys.stderr,
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    from runtime.auth.keystore import MissingTable, list_keys

    try:
        with _connect(args) as conn:
            keys = list_keys(conn, tenant_id=args.tenant, include_revoked=args.all)
    except (MissingTable, psycopg.Error) as exc:
        return _error(str(exc))
    columns = ("key_id", "tenant", "role", "name", "created", "last used", "revoked")
    rows = [
        (
            k.key_id,
            k.tenant_id,
            k.role,
            k.name,
            _time(k.created_at),
            _time(k.last_used_at),
            _time(k.revoked_at),
        )
        for k in keys
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in (columns, *rows):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from runtime.auth.keystore import MissingTable, revoke_key

    try:
        with _connect(args) as conn:
            revoked = revoke_key(conn, args.key_id)
    except KeyError:
        return _error(f"no API key {args.key_id!r}")
    except (MissingTable, psycopg.Error) as exc:
        return _error(str(exc))
    if revoked is None:
        print(f"API key {args.key_id} was already revoked")
    else:
        print(f"revoked API key {args.key_id} at {_time(revoked)}")
    return 0


def _time(value: object) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S%z}"
