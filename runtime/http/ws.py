"""`GET /ws`: subscribe to queries over a WebSocket and get their new results pushed.

The protocol is in runtime/subscriptions/protocol.py and docs/subscriptions.md; the hub
(runtime/subscriptions/hub.py) decides when a subscription re-runs. This module holds one
connection: who it is (the `authenticate` hooks on the handshake's headers, or an
`authenticate` message), its subscriptions, and its bounded send queue. Sending runs in its
own task, so a client that reads slowly only fills its own queue; when the queue overflows
the connection is closed (1008), never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from runtime.engine import Runtime
from runtime.errors import Conflict, PayloadTooLarge, RateLimited, RuntimeFailure, Unauthenticated
from runtime.http.functions import authenticate
from runtime.plugins import HookFailed
from runtime.subscriptions import protocol
from runtime.subscriptions.hub import Hub, Subscription
from runtime.types import Identity

log = logging.getLogger("runtime.http")

MAX_QUEUED_FRAMES = 1000
MAX_QUEUED_BYTES = 16 * 1024 * 1024  # a single larger frame is still sent when alone
CLOSE_POLICY = 1008
CLOSE_ERROR = 1011


class Connection:
    """One WebSocket client: the hub's `Sink`."""

    def __init__(self, ws: WebSocket, runtime: Runtime, hub: Hub) -> None:
        self.ws = ws
        self.runtime = runtime
        self.hub = hub
        self.identity: Identity | None = None
        self.client_ip = ws.client.host if ws.client else None
        self.subscriptions: dict[str, Subscription] = {}
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self.overflowed = False

    # -- sending ---------------------------------------------------------------------

    def push(self, frame: bytes) -> None:
        if self.overflowed:
            return
        if len(self._queue) >= MAX_QUEUED_FRAMES or (
            self._queue and self._queued_bytes + len(frame) > MAX_QUEUED_BYTES
        ):
            self.overflowed = True
            self._queue.clear()
            self._queued_bytes = 0
        else:
            self._queue.append(frame)
            self._queued_bytes += len(frame)
        self._wake.set()

    async def send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self.overflowed:
                frame = self._queue.popleft()
                self._queued_bytes -= len(frame)
                await self.ws.send_text(frame.decode())
            if self.overflowed:
                log.warning("ws: closing a connection whose client reads too slowly")
                await self.ws.close(
                    CLOSE_POLICY, "send queue overflow: the client reads too slowly"
                )
                return

    # -- receiving -------------------------------------------------------------------

    async def receive_loop(self) -> None:
        limit = self.runtime.settings.max_body_bytes
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
            if size > limit:
                self.error(
                    None, PayloadTooLarge(f"The message is {size} bytes; the limit is {limit}")
                )
                continue
            try:
                msg = protocol.decode(data)
            except protocol.MessageError as exc:
                self.error(exc.id, exc.failure)
                continue
            if isinstance(msg, protocol.Subscribe):
                await self.subscribe(msg)
            elif isinstance(msg, protocol.Unsubscribe):
                sub = self.subscriptions.pop(msg.id, None)
                if sub is not None:
                    self.hub.unsubscribe(sub)
            else:
                await self.authenticate(msg.token)

    def error(self, id: str | None, failure: RuntimeFailure) -> None:
        self.push(protocol.error_frame(id, failure))

    async def subscribe(self, msg: protocol.Subscribe) -> None:
        if msg.id in self.subscriptions:
            self.error(msg.id, Conflict(f"Subscription id {msg.id!r} is already in use"))
            return
        limit = self.runtime.settings.ws_max_subscriptions
        if len(self.subscriptions) >= limit:
            self.error(msg.id, RateLimited(f"At most {limit} subscriptions per connection"))
            return
        try:
            sub = await self.hub.subscribe(self, msg.id, msg.function, msg.args)
        except RuntimeFailure as exc:
            self.error(msg.id, exc)
            return
        except HookFailed as exc:
            log.error("ws subscribe %s: %s", msg.function, exc, exc_info=exc.__cause__)
            self.error(msg.id, protocol.internal_failure(exc, dev=self.runtime.settings.dev))
            return
        self.subscriptions[msg.id] = sub

    async def authenticate(self, token: str) -> None:
        """The `authenticate` message: the token as if it came as `Authorization: Bearer`.
        On success every subscription of the connection re-runs as the new identity."""
        try:
            identity = await authenticate(_with_bearer(self.ws, token), self.runtime)
            if identity is None:
                raise Unauthenticated("The token is not a credential this server accepts")
        except RuntimeFailure as exc:
            self.error(None, exc)
            return
        except HookFailed as exc:
            log.error("ws authenticate: %s", exc, exc_info=exc.__cause__)
            self.error(None, protocol.internal_failure(exc, dev=self.runtime.settings.dev))
            return
        self.identity = identity
        for sub in self.subscriptions.values():
            self.hub.rerun(sub)

    def close(self) -> None:
        for sub in self.subscriptions.values():
            self.hub.unsubscribe(sub)
        self.subscriptions.clear()


def _with_bearer(ws: WebSocket, token: str) -> HTTPConnection:
    """The handshake with its credentials replaced by `Authorization: Bearer <token>`."""
    headers = [(k, v) for k, v in ws.scope["headers"] if k not in (b"authorization", b"x-api-key")]
    headers.append((b"authorization", b"Bearer " + token.encode()))
    return HTTPConnection({**ws.scope, "headers": headers})


async def websocket_endpoint(ws: WebSocket) -> None:
    runtime: Runtime = ws.app.state.runtime
    hub = runtime.subscriptions
    if hub is None:  # RUNTIME_SUBSCRIPTIONS=0: refuse the handshake (HTTP 403)
        await ws.close(CLOSE_POLICY)
        return
    await ws.accept()
    conn = Connection(ws, runtime, hub)
    hub.connections += 1
    tasks: list[asyncio.Task[None]] = []
    try:
        try:
            conn.identity = await authenticate(ws, runtime)
        except RuntimeFailure as exc:  # a credential that is present but invalid
            conn.error(None, exc)
        except HookFailed as exc:
            log.error("ws handshake: %s", exc, exc_info=exc.__cause__)
            conn.error(None, protocol.internal_failure(exc, dev=runtime.settings.dev))
        tasks = [
            asyncio.create_task(conn.receive_loop()),
            asyncio.create_task(conn.send_loop()),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = task.exception()
            if failure is not None and not isinstance(failure, (WebSocketDisconnect, OSError)):
                log.error("ws connection failed", exc_info=failure)
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_ERROR)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.close()
        hub.connections -= 1
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close()
