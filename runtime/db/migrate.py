"""Applying schema.json to the database: diff against the catalog, additive changes in one
transaction, destructive ones only when forced. Every applied plan is recorded."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from runtime import schema as schema_mod
from runtime.errors import DestructiveChange
from runtime.sql import load, parse

SQL = load("runtime.sql")
CATALOG = parse(resources.files("runtime.schema").joinpath("catalog.sql").read_text())


def schema_hash(schema: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(schema.raw)).hexdigest()[:16]


async def _plan_and_apply(
    conn: psycopg.AsyncConnection[Any], schema: Any, *, allow_destructive: bool, dry_run: bool
) -> list[str]:
    await conn.execute(SQL["migration_lock"])
    await conn.execute(SQL["create_migrations_table"])
    desired = schema_mod.desired_model(schema)
    tables = list(desired)
    columns = await (await conn.execute(CATALOG["columns"], (tables,))).fetchall()
    indexes = await (await conn.execute(CATALOG["indexes"], (tables,))).fetchall()
    actual = schema_mod.actual_from_catalog(columns, indexes)
    plan = schema_mod.diff(desired, actual)
    if plan.destructive and not allow_destructive:
        raise DestructiveChange(
            [
                f"destructive schema change refused: {what} "
                "(run with --allow-destructive to apply it; data will be lost)"
                for what in plan.destructive
            ]
        )
    statements = list(plan.statements)
    if allow_destructive:
        statements += list(plan.destructive_statements)
    texts = [s.as_string(None) if not isinstance(s, str) else s for s in statements]
    if dry_run or not texts:
        return texts
    for text in texts:
        await conn.execute(text)
    await conn.execute(SQL["record_migration"], (schema_hash(schema), psycopg.types.json.Jsonb(texts)))
    return texts


async def apply_schema(pool: AsyncConnectionPool, schema: Any, *, allow_destructive: bool) -> list[str]:
    """Bring the database up to schema.json in one transaction; returns the statements run."""
    async with pool.connection() as conn, conn.transaction():
        return await _plan_and_apply(conn, schema, allow_destructive=allow_destructive, dry_run=False)


async def migrate_once(
    url: str, schema: Any, *, allow_destructive: bool, dry_run: bool = False
) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        async with conn.transaction(force_rollback=dry_run):
            return await _plan_and_apply(
                conn, schema, allow_destructive=allow_destructive, dry_run=dry_run
            )
