"""`ctx.db`: documents by table and id, and index queries, inside the call's transaction.

SQL text is built once per (table, operation, columns) and cached as a string, so the
driver sees the same text every time and prepares it after its second use. Values are
always bound; identifiers come from schema.json and are quoted with `sql.Identifier`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from runtime.db.connection import RuntimeConnection
from runtime.db.query import Query
from runtime.errors import InvalidDocument, NotFound
from runtime.subscriptions.tables import TableAccess

SYSTEM_COLUMNS = {"_id": "uuid", "_creation_time": "timestamptz"}


class TableInfo(Protocol):
    """What ctx.db needs to know of a table (built from schema.json by runtime.schema)."""

    name: str
    column_types: Mapping[str, str]  # column -> PostgreSQL type, system columns included
    indexes: Mapping[str, Sequence[str]]

    def validate_document(self, doc: Mapping[str, Any], *, partial: bool) -> dict[str, Any]: ...


def bind(pg_type: str, value: Any) -> Any:
    """Wrap a Python value for its column (jsonb needs an explicit wrapper)."""
    if pg_type == "jsonb" and value is not None:
        return Jsonb(value)
    return value


@lru_cache(maxsize=4096)
def _select_by_id(table: str) -> str:
    return (
        sql.SQL("SELECT * FROM {} WHERE _id = %s::uuid")
        .format(sql.Identifier(table))
        .as_string(None)
    )


@lru_cache(maxsize=4096)
def _insert(table: str, columns: tuple[str, ...], types: tuple[str, ...]) -> str:
    return (
        sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING _id")
        .format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.SQL("%s::" + t) for t in types),
        )
        .as_string(None)
        if columns
        else sql.SQL("INSERT INTO {} DEFAULT VALUES RETURNING _id")
        .format(sql.Identifier(table))
        .as_string(None)
    )


@lru_cache(maxsize=4096)
def _update(table: str, columns: tuple[str, ...], types: tuple[str, ...]) -> str:
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = %s::" + t).format(sql.Identifier(c))
        for c, t in zip(columns, types, strict=True)
    )
    return (
        sql.SQL("UPDATE {} SET {} WHERE _id = %s::uuid")
        .format(sql.Identifier(table), assignments)
        .as_string(None)
    )


@lru_cache(maxsize=4096)
def _delete(table: str) -> str:
    return (
        sql.SQL("DELETE FROM {} WHERE _id = %s::uuid").format(sql.Identifier(table)).as_string(None)
    )


class Database:
    """The documents API handed to queries and mutations as `ctx.db`."""

    __slots__ = ("_access", "_conn", "_cursor", "_read_only", "_tables")

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        tables: Mapping[str, TableInfo],
        read_only: bool,
        access: TableAccess | None = None,
    ) -> None:
        self._conn = conn
        # Single-row statements share the connection's reusable cursor (runtime/db/connection.py).
        self._cursor: psycopg.AsyncCursor[DictRow] = (
            conn.documents
            if isinstance(conn, RuntimeConnection)
            else conn.cursor(row_factory=dict_row)
        )
        self._tables = tables
        self._read_only = read_only
        self._access = access if access is not None else TableAccess(tables)  # tables touched

    def _table(self, name: str) -> TableInfo:
        try:
            return self._tables[name]
        except KeyError:
            raise InvalidDocument(f"Unknown table {name!r}") from None

    async def get(self, table: str, id: str) -> dict[str, Any] | None:
        """The document with this `_id`, or None (also for a malformed id)."""
        self._table(table)
        self._access.reads.add(table)
        if not _looks_like_uuid(id):
            return None
        cur = self._cursor
        await cur.execute(_select_by_id(table), (id,))
        return await cur.fetchone()

    async def insert(self, table: str, doc: Mapping[str, Any]) -> str:
        """Validate `doc` against the table schema, insert it, return its new `_id`."""
        info = self._table(table)
        clean = info.validate_document(doc, partial=False)
        columns = tuple(clean)
        types = tuple(info.column_types[c] for c in columns)
        self._access.writes.add(table)
        cur = self._cursor
        await cur.execute(
            _insert(table, columns, types),
            [bind(t, clean[c]) for c, t in zip(columns, types, strict=True)],
        )
        row = await cur.fetchone()
        assert row is not None
        return str(row["_id"])

    async def patch(self, table: str, id: str, fields: Mapping[str, Any]) -> None:
        """Set the given columns of one document; raise not_found if it does not exist."""
        info = self._table(table)
        clean = info.validate_document(fields, partial=True)
        await self._update(info, id, clean)

    async def replace(self, table: str, id: str, doc: Mapping[str, Any]) -> None:
        """Replace every column of one document (columns missing from `doc` become NULL)."""
        info = self._table(table)
        clean = info.validate_document(doc, partial=False)
        full = {c: clean.get(c) for c in info.column_types if c not in SYSTEM_COLUMNS}
        await self._update(info, id, full)

    async def delete(self, table: str, id: str) -> None:
        """Delete one document; raise not_found if it does not exist."""
        self._table(table)
        if not _looks_like_uuid(id):
            raise NotFound(f"No document {id!r} in table {table!r}")
        self._access.writes.add(table)
        cur = self._cursor
        await cur.execute(_delete(table), (id,))
        if cur.rowcount == 0:
            raise NotFound(f"No document {id!r} in table {table!r}")

    def query(self, table: str) -> Query:
        """Start an index query: `.with_index(...)`, `.where(...)`, `.order(...)`, then read."""
        info = self._table(table)
        self._access.reads.add(table)
        return Query(self._conn, info)

    async def _update(self, info: TableInfo, id: str, clean: Mapping[str, Any]) -> None:
        if not _looks_like_uuid(id):
            raise NotFound(f"No document {id!r} in table {info.name!r}")
        if not clean:
            if await self.get(info.name, id) is None:
                raise NotFound(f"No document {id!r} in table {info.name!r}")
            return
        columns = tuple(clean)
        types = tuple(info.column_types[c] for c in columns)
        params = [bind(t, clean[c]) for c, t in zip(columns, types, strict=True)]
        params.append(id)
        self._access.writes.add(info.name)
        cur = self._cursor
        await cur.execute(_update(info.name, columns, types), params)
        if cur.rowcount == 0:
            raise NotFound(f"No document {id!r} in table {info.name!r}")


_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def _looks_like_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None
