"""The process's one LISTEN connection on `swarm_changes`.

Every mutation that wrote tables sends `pg_notify('swarm_changes', '<tables>')` with its
COMMIT, whichever worker or replica ran it; every server process that has subscriptions
holds one dedicated autocommit connection that LISTENs and hands each payload to the hub
(which starts and cancels the listener, runtime/subscriptions/hub.py). The connection
reconnects with exponential backoff (0.1 s doubling up to 5 s); notifications sent while it
was down are lost, so each (re)connection is reported and the hub re-runs every subscription.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from runtime.sql import load

log = logging.getLogger("runtime.subscriptions")

SQL = load("changes.sql")
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0


class Listener:
    """`run()` until cancelled: LISTEN, pass payloads to `on_change`, call `on_connect`
    after every (re)connection, reconnect on loss."""

    def __init__(
        self,
        database_url: str,
        on_change: Callable[[str], None],
        on_connect: Callable[[], None],
    ) -> None:
        self.database_url = database_url
        self.on_change = on_change
        self.on_connect = on_connect
        self.ready = asyncio.Event()  # set while the LISTEN is up
        self.connections = 0  # successful (re)connections, for tests and status

    async def run(self) -> None:
        delay = FIRST_DELAY_S
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.database_url,
                    autocommit=True,
                    application_name="swarm-runtime-subscriptions",
                )
                async with conn:
                    await conn.execute(SQL["listen"])
                    self.connections += 1
                    self.ready.set()
                    delay = FIRST_DELAY_S
                    self.on_connect()
                    async for notify in conn.notifies():
                        self.on_change(notify.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "subscriptions: LISTEN connection lost (%s); reconnecting in %.1f s",
                    exc,
                    delay,
                )
            finally:
                self.ready.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
