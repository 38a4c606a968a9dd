"""Creating, listing and revoking API keys in table `api_keys` (for `swarm-runtime apikey`).

Synchronous psycopg: it serves the CLI. The `auth_apikey` plugin only reads the table.
The table comes from schema.json; when it is missing, `MissingTable` says how to create it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runtime.auth.apikeys import NewApiKey, generate_api_key
from runtime.sql import parse


class MissingTable(Exception):
    """Table api_keys does not exist: run `swarm-runtime migrate` with the Swarm schema.json."""


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    tenant_id: str
    role: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@cache
def _sql() -> dict[str, str]:
    return parse(resources.files(__package__).joinpath("keystore.sql").read_text("utf-8"))


def _check_table(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(_sql()["table_exists"]).fetchone()
    if not row or not row[0]:
        raise MissingTable((MissingTable.__doc__ or "").strip())


def known_roles(conn: psycopg.Connection[Any]) -> list[str] | None:
    """Role names from table roles, or None when there is no such table."""
    if conn.execute("SELECT to_regclass('roles') IS NOT NULL").fetchone() != (True,):
        return None
    return [r[0] for r in conn.execute(_sql()["role_names"]).fetchall()]


def create_key(conn: psycopg.Connection[Any], *, tenant_id: str, role: str, name: str) -> NewApiKey:
    """Store a new key's hash; the returned `token` is the only copy of the secret."""
    _check_table(conn)
    key = generate_api_key()
    with conn.transaction():
        conn.execute(
            _sql()["insert_key"], (tenant_id, role, name, key.key_id, key.salt, key.key_hash)
        )
    return key


def list_keys(
    conn: psycopg.Connection[Any], *, tenant_id: str | None = None, include_revoked: bool = False
) -> list[KeyRecord]:
    _check_table(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            _sql()["list_keys"], {"tenant_id": tenant_id, "all": include_revoked}
        ).fetchall()
    return [KeyRecord(**row) for row in rows]


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> datetime | None:
    """Revoke `key_id`; its revocation time, or None when there is no such live key.

    Raises KeyError when no key has this id at all."""
    _check_table(conn)
    with conn.transaction():
        row = conn.execute(_sql()["revoke_key"], (key_id,)).fetchone()
        if row is not None:
            revoked: datetime = row[0]
            return revoked
        if conn.execute(_sql()["key_exists"], (key_id,)).fetchone() is None:
            raise KeyError(key_id)
    return None
