"""The connection pool and how each of its connections is set up."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from runtime.config import Settings
from runtime.db.connection import RuntimeConnection

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def configure_adapters(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    # uuid columns load as str (app code and JSON see the strings they sent), with psycopg's
    # own text loader: its C version when psycopg-binary is installed.
    conn.adapters.register_loader("uuid", TextLoader)
    set_json_loads(_json_decode, conn)
    set_json_dumps(_json_encode, conn)


async def _configure(conn: RuntimeConnection) -> None:
    configure_adapters(conn)
    await conn.set_autocommit(True)


def make_pool(settings: Settings, conninfo: str) -> AsyncConnectionPool[RuntimeConnection]:
    """A pool of autocommit connections; transactions are begun explicitly per call.

    The statement timeout is a session default set at connect time, so the hot path needs
    no extra round trip; functions with their own timeout set it locally.
    """
    options = (
        f"-c statement_timeout={settings.statement_timeout_ms}"
        " -c idle_in_transaction_session_timeout=60000"
    )
    return AsyncConnectionPool(
        conninfo,
        connection_class=RuntimeConnection,
        kwargs={"options": options, "prepare_threshold": 2, "application_name": "swarm-runtime"},
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout_s,
        max_waiting=0,
        configure=_configure,
        reconnect_timeout=3600.0,
        open=False,
        name="swarm-runtime",
    )
