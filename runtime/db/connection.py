"""The pooled connection: psycopg's AsyncConnection with the runtime's hot path made cheap.

Every call costs at least BEGIN, its statements, and COMMIT, each a round trip, and psycopg's
client work per statement is much of a call's CPU. `python -m benchmarks.bench_psycopg` runs
the benchmark transaction (BEGIN, point SELECT, UPDATE, COMMIT) from 16 tasks on psycopg alone:
a fresh cursor per statement 3,557 calls/s at 276 µs client CPU per call; one reused cursor
3,951/s at 245 µs; that cursor plus BEGIN/COMMIT sent without a cursor (this module) 4,171/s
at 227 µs. Pipeline mode, which saves round trips, cost more client CPU than it saved
(3,492/s at 282 µs). So `RuntimeConnection` keeps one cursor for ctx.db's single-row
statements and sends control statements as bare simple queries.

`command` drives libpq through psycopg's `generators.execute` and `AsyncConnection.wait`, the
same pieces psycopg's own `commit()` uses; they are not documented API, hence the `<3.4` bound
on psycopg in pyproject.toml (tests/test_transactions.py and the suite exercise this path).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.generators import execute
from psycopg.rows import DictRow, dict_row

_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR


class RuntimeConnection(psycopg.AsyncConnection[Any]):
    """The pool's `connection_class`.

    `documents` is a dict-row cursor reused by ctx.db's single-row statements (get, insert,
    patch, replace, delete): each reads its result right after its own `execute`, with no
    suspension in between, so calls that share it concurrently (asyncio.gather in app code)
    still each read their own result.
    """

    __slots__ = ("_documents",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._documents: psycopg.AsyncCursor[DictRow] | None = None

    @property
    def documents(self) -> psycopg.AsyncCursor[DictRow]:
        cursor = self._documents
        if cursor is None:
            cursor = self._documents = self.cursor(row_factory=dict_row)
        return cursor

    async def command(self, statements: bytes) -> None:
        """Run parameterless statements (`BEGIN ...`, `COMMIT`, `NOTIFY ...; COMMIT`) as one
        simple query, without a cursor; the first one that fails raises its psycopg error
        (the rest of the string does not run)."""
        async with self.lock:
            if self.closed:
                raise psycopg.OperationalError("the connection is closed")
            self.pgconn.send_query(statements)
            results = await self.wait(execute(self.pgconn))
        for result in results:
            if result.status == _FATAL_ERROR:
                raise pg_errors.error_from_result(result, encoding=self.info.encoding)
