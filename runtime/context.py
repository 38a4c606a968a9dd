"""`ctx`: what a function receives as its first argument (DESIGN §5)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from runtime.db.documents import Database, TableInfo
from runtime.subscriptions.tables import TableAccess
from runtime.types import Identity, VMDriver

if TYPE_CHECKING:
    from runtime.engine import Runtime


class Context:
    """Shared by every kind: who calls, when, and a logger tagged with the call."""

    def __init__(
        self,
        runtime: Runtime,
        function: str,
        auth: Identity | None,
        request_id: str,
        now: datetime,
        *,
        client_ip: str | None = None,
    ) -> None:
        self._runtime = runtime
        self.function = function
        self.auth = auth
        self.request_id = request_id
        self.now = now
        self.client_ip = client_ip  # the HTTP caller's address (None when called from code)

    @functools.cached_property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger named `app.<function>` whose records carry the function and request id."""
        return logging.LoggerAdapter(
            logging.getLogger(f"app.{self.function}"),
            {"function": self.function, "request_id": self.request_id},
        )


class TxContext(Context):
    """For queries and mutations: everything runs in the call's one transaction."""

    def __init__(
        self,
        runtime: Runtime,
        function: str,
        auth: Identity | None,
        request_id: str,
        now: datetime,
        conn: psycopg.AsyncConnection[Any],
        attempt: int,
        read_only: bool,
        *,
        tables: Mapping[str, TableInfo],
        client_ip: str | None = None,
        access: TableAccess | None = None,
    ) -> None:
        super().__init__(runtime, function, auth, request_id, now, client_ip=client_ip)
        self.attempt = attempt
        self.read_only = read_only
        self.connection = conn
        # The tables this attempt reads and writes (query subscriptions, change notices).
        self._access = access if access is not None else TableAccess(tables)
        self.db = Database(conn, tables, read_only, self._access)

    async def sql(self, text: str, *params: Any) -> list[dict[str, Any]]:
        """Run raw SQL (with %s placeholders) in this transaction; rows as dicts."""
        self._access.sql(text, self.read_only)
        cur = self.connection.cursor(row_factory=dict_row)
        await cur.execute(text, params or None)
        if cur.description is None:
            return []
        return await cur.fetchall()


class ActionContext(Context):
    """For actions: no transaction; call other functions and the outside world."""

    attempt = 1

    async def run_query(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        return await self._runtime.call_internal(
            name, args or {}, self.auth, self.request_id, "query", client_ip=self.client_ip
        )

    async def run_mutation(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        return await self._runtime.call_internal(
            name, args or {}, self.auth, self.request_id, "mutation", client_ip=self.client_ip
        )

    async def run_action(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        return await self._runtime.call_internal(
            name, args or {}, self.auth, self.request_id, "action", client_ip=self.client_ip
        )

    @property
    def vm(self) -> VMDriver:
        """The configured VM driver (`RUNTIME_VM_DRIVER`, default "process")."""
        return self._runtime.vm_driver()
