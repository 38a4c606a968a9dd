"""The subscriptions of one server process: registry, invalidation and re-runs.

A subscription is (connection, client id, query, args). Each run records the tables the
query read (`TableAccess`); a `swarm_changes` notification naming any of them, or `*`,
marks it dirty. Re-runs are coalesced per subscription: at most one in flight, after a short
debounce, and again if it was dirtied meanwhile. Every run goes through the normal query
path (`Runtime.call`: SERIALIZABLE READ ONLY, the subscriber's identity, authorization and
argument validation against the code serving now), and a frame is pushed only when its bytes
differ from the last one pushed. Runs are bounded per process by a semaphore, so a burst of
invalidations queues instead of draining the pool that serves HTTP calls.

The process LISTENs only while it has subscriptions (and `LISTEN_IDLE_S` after the last one
goes): PostgreSQL wakes every listening session on every notification, so a process nobody
subscribes to costs the writers nothing. Until the LISTEN is up a subscription may miss a
notification, which is why every (re)connection re-runs them all.

A subscription whose read set is not known yet (before its first run, or after a failure
before the query ran) counts as reading every table. A notification that arrives while a
run is in flight is checked against the read set that run ends up with (a query may read
other tables than last time), so no commit after the run's snapshot goes unnoticed. After a
reload and after the LISTEN connection (re)connects, every subscription re-runs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from runtime.errors import Internal, NotFound, RuntimeFailure, Unavailable
from runtime.plugins import HookFailed
from runtime.subscriptions import protocol
from runtime.subscriptions.listener import Listener
from runtime.subscriptions.tables import TableAccess, parse_changes
from runtime.types import Identity

if TYPE_CHECKING:
    from runtime.engine import Runtime
    from runtime.registry import FunctionDef

log = logging.getLogger("runtime.subscriptions")

DEBOUNCE_S = 0.015  # coalesces the notifications of a burst of commits into one re-run
RETRY_DELAY_S = 1.0  # after `unavailable` (pool exhausted, database down)
LISTEN_IDLE_S = 10.0  # keep listening this long after the last subscription went
RECENT_CHANGES = 1024  # notifications remembered for the runs in flight


class Sink(Protocol):
    """A subscriber's connection, as the hub sees it."""

    identity: Identity | None
    client_ip: str | None

    def push(self, frame: bytes) -> None:
        """Queue one frame for the client; never blocks (a full queue drops the client)."""


@dataclass(eq=False)
class Subscription:
    sink: Sink
    id: str
    function: str
    args: Mapping[str, Any]
    reads: frozenset[str] | None = None  # None: any table
    last: bytes | None = None  # the last frame pushed
    dirty: bool = False
    active: bool = True
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Hub:
    """One per Runtime (when `RUNTIME_SUBSCRIPTIONS` is on)."""

    def __init__(self, runtime: Runtime, *, max_concurrent_runs: int) -> None:
        self.runtime = runtime
        self.listener: Listener | None = None  # while there are subscriptions
        self._listening: asyncio.Task[None] | None = None
        self._idle: asyncio.Task[None] | None = None
        self._runs = asyncio.Semaphore(max(1, max_concurrent_runs))
        self._all: set[Subscription] = set()
        self._any: set[Subscription] = set()  # read sets unknown or "any table"
        self._by_table: dict[str, set[Subscription]] = {}
        self._seq = 0  # notifications received
        self._recent: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=RECENT_CHANGES)
        self.connections = 0  # open WebSocket connections (the endpoint counts them)
        self.runs = 0  # query runs, initial ones included
        self.pushes = 0  # frames pushed

    @property
    def count(self) -> int:
        return len(self._all)

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up."""
        return self.listener is not None and self.listener.ready.is_set()

    @property
    def settled(self) -> bool:
        """Listening, and no run scheduled or in flight (what tests wait for)."""
        return self.listening and all(sub.task is None for sub in self._all)

    # -- the LISTEN connection, held while there are subscriptions ---------------------

    def _listen(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._listening is None:
            self.listener = Listener(self.runtime.database_url, self.changed, self.rerun_all)
            self._listening = self.runtime.spawn(self.listener.run())

    def _unlisten_when_idle(self) -> None:
        if not self._all and self._listening is not None and self._idle is None:
            self._idle = self.runtime.spawn(self._stop_listening())

    async def _stop_listening(self) -> None:
        await asyncio.sleep(LISTEN_IDLE_S)
        self._idle = None
        if not self._all and self._listening is not None:
            self._listening.cancel()
            self._listening = None
            self.listener = None

    # -- subscribing ---------------------------------------------------------------

    async def subscribe(
        self, sink: Sink, id: str, function: str, args: Mapping[str, Any]
    ) -> Subscription:
        """Check the request as `POST /fn` would (query only), register it, start its first
        run. Raises the RuntimeFailure to answer when the request itself is refused."""
        fn = self._query(function)
        await self.runtime.authorize(fn, sink.identity)
        self.runtime.decode_args(fn, args)  # invalid arguments are refused now
        sub = Subscription(sink, id, function, args)
        self._listen()
        self._all.add(sub)
        self._any.add(sub)  # reads=None until the first run says what it reads
        self._schedule(sub, debounce=False)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.active:
            sub.active = False
            self._all.discard(sub)
            self._unindex(sub)
            self._unlisten_when_idle()

    def _query(self, function: str) -> FunctionDef:
        fn = self.runtime.lookup(function, from_http=True)
        if fn.kind != "query":
            raise NotFound(f"{function} is a {fn.kind}; only queries can be subscribed to")
        return fn

    # -- invalidation ----------------------------------------------------------------

    def changed(self, payload: str) -> None:
        """A `swarm_changes` notification: re-run the subscriptions that read those tables."""
        tables = parse_changes(payload)
        self._seq += 1
        self._recent.append((self._seq, tables))
        if tables is None:
            self.rerun_all()
            return
        dirty = set(self._any)
        for table in tables:
            dirty |= self._by_table.get(table, set())
        for sub in dirty:
            self._schedule(sub)

    def rerun_all(self) -> None:
        """After a reload or a LISTEN reconnection: every subscription may be stale."""
        for sub in list(self._all):
            self._schedule(sub)

    def rerun(self, sub: Subscription) -> None:
        self._schedule(sub)

    def _schedule(self, sub: Subscription, *, debounce: bool = True) -> None:
        if not sub.active:
            return
        sub.dirty = True
        if sub.task is None:
            sub.task = self.runtime.spawn(self._loop(sub, debounce))

    async def _loop(self, sub: Subscription, debounce: bool) -> None:
        """The one task of a dirty subscription: run until it stays clean."""
        try:
            while sub.dirty and sub.active:
                if debounce:
                    await asyncio.sleep(DEBOUNCE_S)
                debounce = True
                async with self._runs:
                    if not sub.active:
                        break
                    sub.dirty = False
                    transient = await self._run(sub)
                if transient and not sub.dirty:
                    await asyncio.sleep(RETRY_DELAY_S)
                    sub.dirty = True
        finally:
            sub.task = None

    async def _run(self, sub: Subscription) -> bool:
        """Run the query once and push its frame if it changed; True after `unavailable`."""
        runtime = self.runtime
        access = TableAccess()
        ran = False
        transient = False
        self.runs += 1
        seen = self._seq
        try:
            fn = self._query(sub.function)
            identity = sub.sink.identity
            await runtime.authorize(fn, identity)
            kwargs = runtime.decode_args(fn, sub.args)
            ran = True
            result = await runtime.call(
                fn, kwargs, identity, uuid.uuid4().hex, sub.sink.client_ip, access=access
            )
            frame = protocol.result_frame(sub.id, protocol.encode_value(result.value))
        except Unavailable as exc:
            frame, transient = protocol.error_frame(sub.id, exc), True
        except RuntimeFailure as exc:
            frame = protocol.error_frame(sub.id, exc)
        except HookFailed as exc:
            log.error("subscription %s: %s", sub.function, exc, exc_info=exc.__cause__)
            frame = protocol.error_frame(sub.id, Internal())
        except Exception as exc:
            log.exception("subscription %s raised", sub.function)
            failure = protocol.internal_failure(exc, dev=runtime.settings.dev)
            frame = protocol.error_frame(sub.id, failure)
        if not sub.active:
            return False
        if not transient:
            # What the run read decides what re-runs it; a refusal before the query ran
            # (e.g. its function gone after a reload) counts as reading anything.
            self._reindex(sub, access.read_set() if ran else None)
            if self._changed_since(seen, sub.reads):
                sub.dirty = True
        if frame != sub.last:
            sub.last = frame
            self.pushes += 1
            sub.sink.push(frame)
        return transient

    def _changed_since(self, seen: int, reads: frozenset[str] | None) -> bool:
        """Whether a notification received after number `seen` may concern `reads`."""
        if self._seq == seen:
            return False
        if not self._recent or self._recent[0][0] > seen + 1:
            return True  # forgotten: assume so
        for seq, tables in reversed(self._recent):
            if seq <= seen:
                break
            if tables is None or reads is None or not tables.isdisjoint(reads):
                return True
        return False

    def _reindex(self, sub: Subscription, reads: frozenset[str] | None) -> None:
        """Index `sub` under the tables it read (None: under "any") instead of the old ones."""
        if reads == sub.reads:
            return
        self._unindex(sub)
        sub.reads = reads
        if reads is None:
            self._any.add(sub)
        else:
            for table in reads:
                self._by_table.setdefault(table, set()).add(sub)

    def _unindex(self, sub: Subscription) -> None:
        if sub.reads is None:
            self._any.discard(sub)
            return
        for table in sub.reads:
            subs = self._by_table.get(table)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_table[table]
