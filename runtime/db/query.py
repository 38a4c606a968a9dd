"""Index queries: `ctx.db.query(table).with_index(...).where(...).order(...).take(n)`.

A query is a small immutable-looking builder; nothing runs until `first`, `take`,
`collect`, `paginate` or `count`. Pagination is keyset-based on the order columns plus
`_id`, so pages stay stable while rows are inserted.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runtime.errors import InvalidArgs

if TYPE_CHECKING:
    from runtime.db.documents import TableInfo

_OPERATORS = {"=": "=", "==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class Query:
    def __init__(self, conn: psycopg.AsyncConnection[Any], table: TableInfo) -> None:
        self._conn = conn
        self._table = table
        self._filters: list[tuple[str, str, Any]] = []
        self._order: list[str] = []
        self._descending = False

    def _check_column(self, column: str) -> str:
        if column not in self._table.column_types:
            raise InvalidArgs(f"Unknown column {column!r} of table {self._table.name!r}")
        return self._table.column_types[column]

    def with_index(self, name: str, /, **equal: Any) -> Query:
        """Use index `name`: equality on a prefix of its columns; results ordered by it."""
        try:
            columns = list(self._table.indexes[name])
        except KeyError:
            raise InvalidArgs(f"Unknown index {name!r} of table {self._table.name!r}") from None
        for column, value in equal.items():
            if column not in columns:
                raise InvalidArgs(f"Column {column!r} is not in index {name!r}")
            self._filters.append((column, "=", value))
        self._order = [c for c in columns if c not in equal] + ["_creation_time"]
        return self

    def where(self, column: str, op: str, value: Any) -> Query:
        """Filter on any column: = != < <= > >=, `in` (a list), `contains` (array holds value)."""
        self._check_column(column)
        if op not in _OPERATORS and op not in ("in", "contains", "is_null", "not_null"):
            raise InvalidArgs(f"Unknown operator {op!r}")
        self._filters.append((column, op, value))
        return self

    def range(self, column: str, **bounds: Any) -> Query:
        """Range on a column: `gt=`, `gte=`, `lt=`, `lte=`."""
        ops = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        for name, value in bounds.items():
            if name not in ops:
                raise InvalidArgs(f"Unknown range bound {name!r}")
            self.where(column, ops[name], value)
        return self

    def order(self, direction: str = "asc", *columns: str) -> Query:
        """Order ascending or descending, by the given columns or the index's."""
        if direction not in ("asc", "desc"):
            raise InvalidArgs("order direction must be 'asc' or 'desc'")
        self._descending = direction == "desc"
        if columns:
            for c in columns:
                self._check_column(c)
            self._order = list(columns)
        return self

    async def first(self) -> dict[str, Any] | None:
        rows = await self._fetch(1)
        return rows[0] if rows else None

    async def take(self, n: int) -> list[dict[str, Any]]:
        return await self._fetch(n)

    async def collect(self) -> list[dict[str, Any]]:
        return await self._fetch(None)

    async def count(self) -> int:
        where, params = self._where_sql()
        text = sql.SQL("SELECT count(*) FROM {}{}").format(sql.Identifier(self._table.name), where)
        cur = await self._conn.execute(text, params)
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def paginate(self, cursor: str | None, n: int) -> dict[str, Any]:
        """One page: `{"page": [...], "cursor": str | None, "is_done": bool}`."""
        order = self._order_columns()
        extra: list[tuple[sql.Composable, list[Any]]] = []
        if cursor:
            try:
                last = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()))
                assert isinstance(last, list) and len(last) == len(order)
            except Exception:
                raise InvalidArgs("Invalid pagination cursor") from None
            cmp = sql.SQL("<" if self._descending else ">")
            keys = sql.SQL(", ").join(map(sql.Identifier, order))
            marks = sql.SQL(", ").join(sql.SQL("%s::" + self._table.column_types[c]) for c in order)
            extra.append((sql.SQL("({}) {} ({})").format(keys, cmp, marks), last))
        rows = await self._fetch(n + 1, extra)
        done = len(rows) <= n
        page = rows[:n]
        next_cursor = None
        if not done and page:
            values = [page[-1][c] for c in order]
            next_cursor = base64.urlsafe_b64encode(msgspec.json.encode(values)).decode()
        return {"page": page, "cursor": next_cursor, "is_done": done}

    def _order_columns(self) -> list[str]:
        order = [c for c in (self._order or ["_creation_time"]) if c != "_id"]
        return [*order, "_id"]

    def _where_sql(
        self, extra: Sequence[tuple[sql.Composable, list[Any]]] = ()
    ) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for column, op, value in self._filters:
            pg_type = self._check_column(column)
            ident = sql.Identifier(column)
            if op == "in":
                parts.append(sql.SQL("{} = ANY(%s::" + _array_of(pg_type) + ")").format(ident))
                params.append(list(value))
            elif op == "contains":
                parts.append(sql.SQL("{} @> %s::" + pg_type).format(ident))
                params.append([value] if pg_type.endswith("[]") else _json_param(value))
            elif op == "is_null":
                parts.append(sql.SQL("{} IS NULL").format(ident))
            elif op == "not_null":
                parts.append(sql.SQL("{} IS NOT NULL").format(ident))
            elif value is None and op in ("=", "=="):
                parts.append(sql.SQL("{} IS NULL").format(ident))
            else:
                parts.append(sql.SQL("{} " + _OPERATORS[op] + " %s::" + pg_type).format(ident))
                params.append(_json_param(value) if pg_type == "jsonb" else value)
        for clause, values in extra:
            parts.append(clause)
            params.extend(values)
        if not parts:
            return sql.SQL(""), params
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params

    async def _fetch(
        self, limit: int | None, extra: Sequence[tuple[sql.Composable, list[Any]]] = ()
    ) -> list[dict[str, Any]]:
        where, params = self._where_sql(extra)
        direction = sql.SQL(" DESC" if self._descending else "")
        order = sql.SQL(", ").join(sql.Identifier(c) + direction for c in self._order_columns())
        text = sql.SQL("SELECT * FROM {}{} ORDER BY {}").format(
            sql.Identifier(self._table.name), where, order
        )
        if limit is not None:
            text = text + sql.SQL(" LIMIT %s")
            params.append(int(limit))
        cur = self._conn.cursor(row_factory=dict_row)
        await cur.execute(text.as_string(None), params)
        return await cur.fetchall()


def _array_of(pg_type: str) -> str:
    return pg_type if pg_type.endswith("[]") else pg_type + "[]"


def _json_param(value: Any) -> Any:
    return Jsonb(value)
