"""Applying schema.json to the database: diff against the catalog, additive changes in one
transaction, destructive ones only when forced. Every applied plan is recorded."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from runtime import schema as schema_mod
from runtime.sql import load

SQL = load("runtime.sql")


async def _plan_and_apply(
    conn: psycopg.AsyncConnection[Any], schema: Any, *, allow_destructive: bool, dry_run: bool
) -> list[str]:
    await conn.execute(SQL["migration_lock"])
    await conn.execute(SQL["create_migrations_table"])
    desired = schema_mod.desired_model(schema)
    tables = list(desired)
    columns = await (
        await conn.execute(schema_mod.CATALOG_QUERIES["columns"], (tables,))
    ).fetchall()
    indexes = await (
        await conn.execute(schema_mod.CATALOG_QUERIES["indexes"], (tables,))
    ).fetchall()
    actual = schema_mod.actual_from_catalog(columns, indexes)
    plan = schema_mod.diff(desired, actual)
    statements = plan.to_apply(allow_destructive=allow_destructive)  # or DestructiveChange
    texts = [s.as_string(None) for s in statements]
    if dry_run or not texts:
        return texts
    for text in texts:
        await conn.execute(text)
    await conn.execute(
        SQL["record_migration"], (schema.version[:16], psycopg.types.json.Jsonb(texts))
    )
    return texts


async def apply_schema(
    pool: AsyncConnectionPool[Any], schema: Any, *, allow_destructive: bool
) -> list[str]:
    """Bring the database up to schema.json in one transaction; returns the statements run."""
    async with pool.connection() as conn, conn.transaction():
        return await _plan_and_apply(
            conn, schema, allow_destructive=allow_destructive, dry_run=False
        )


async def migrate_once(
    url: str, schema: Any, *, allow_destructive: bool = False, dry_run: bool = False
) -> list[str]:
    connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with connection as conn, conn.transaction(force_rollback=dry_run):
        return await _plan_and_apply(
            conn, schema, allow_destructive=allow_destructive, dry_run=dry_run
        )
