"""The Runtime: settings, pool, plugins and the serving registry, and how a call runs.

HTTP-free: the HTTP layer (runtime/http/) turns requests into `Runtime.call` and results or
`RuntimeFailure`s into responses. Plugin routes, the scheduler and actions call functions
through the same object.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import pluggy
import psycopg

from runtime import errors
from runtime import schema as schema_mod
from runtime.config import Settings
from runtime.context import ActionContext, TxContext
from runtime.db.migrate import apply_schema
from runtime.db.pool import make_pool
from runtime.defaults import DEFAULT_PLUGINS, DEV_PLUGINS
from runtime.hotkeys import HotKeyTracker
from runtime.plugins import HookFailed, call_all, call_first, make_plugin_manager
from runtime.registry import FunctionDef, Registry, build_registry
from runtime.reload import Reloader, ReloadOutcome
from runtime.retry import RetryPolicy
from runtime.subscriptions.hub import Hub
from runtime.subscriptions.tables import TableAccess
from runtime.transactions import Transactor
from runtime.types import CallInfo, Identity, VMDriver

log = logging.getLogger("runtime")


@dataclass
class CallResult:
    value: Any
    attempts: int
    hot_key_waited: bool


class Runtime:
    """One per server process. Holds the serving `registry`, swapped atomically on reload."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.pool = make_pool(settings, database_url)
        self.hot_keys = HotKeyTracker(settings.hot_key_window_s)
        self.transactor = Transactor(
            self.pool,
            RetryPolicy(**vars(settings.retry)),
            self.hot_keys,
            settings.pool_timeout_s,
        )
        self.registry: Registry | None = None
        self.plugins: pluggy.PluginManager = make_plugin_manager(
            settings.plugins_dir,
            defaults=DEFAULT_PLUGINS + (DEV_PLUGINS if settings.dev else []),
        )
        self.vm_drivers: dict[str, VMDriver] = {}
        self.started_at = time.time()
        self.reload_status: dict[str, Any] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.reloader: Reloader | None = None
        self.rebuild_routes: Callable[[], None] | None = None  # set by the HTTP app
        # Query subscriptions (GET /ws); with them off, mutations send no change notices.
        self.subscriptions: Hub | None = (
            Hub(self, max_concurrent_runs=settings.pool_max // 2)
            if settings.subscriptions
            else None
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool, apply schema.json, load app_functions, run plugin startup hooks."""
        registry = build_registry(self.settings.functions_dir, self.settings.schema_path, 1)
        await self.pool.open(wait=True, timeout=max(self.settings.pool_timeout_s, 10.0))
        await apply_schema(
            self.pool, registry.schema, allow_destructive=self.settings.allow_destructive
        )
        self.registry = registry
        self.reload_status = {
            "serving_version": registry.version,
            "reloads": 0,
            "last": None,
            "last_error": None,
        }
        for drivers in self.plugins.hook.vm_drivers():
            self.vm_drivers.update(drivers)
        await call_all(self.plugins, "startup", runtime=self)
        if self.settings.reload:
            self.reloader = Reloader(self)
            self.spawn(self.reloader.run())
        if self.settings.freeze_gc:
            gc.collect()
            gc.freeze()

    async def stop(self) -> None:
        if self.reloader is not None:
            self.reloader.stop()
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        try:
            await call_all(self.plugins, "shutdown", runtime=self)
        finally:
            await self.pool.close()

    def notify_reloaded(self, outcome: ReloadOutcome) -> None:
        if outcome.ok and self.subscriptions is not None:
            self.subscriptions.rerun_all()  # the code of any query may have changed
        try:
            self.plugins.hook.reloaded(
                version=outcome.version,
                added=outcome.added,
                changed=outcome.changed,
                removed=outcome.removed,
                duration_s=outcome.duration_ms / 1000,
                error=outcome.error,
            )
        except Exception:
            log.exception("a reloaded hook failed")

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a background task owned by the runtime; cancelled on stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def vm_driver(self) -> VMDriver:
        name = os.environ.get("RUNTIME_VM_DRIVER", "process")
        try:
            return self.vm_drivers[name]
        except KeyError:
            raise errors.Internal(f"VM driver {name!r} is not installed") from None

    # -- calls -----------------------------------------------------------------------

    def lookup(self, name: str, *, from_http: bool) -> FunctionDef:
        registry = self.registry
        fn = registry.functions.get(name) if registry else None
        if fn is None or (from_http and fn.internal):
            raise errors.NotFound(f"Unknown function {name!r}")
        return fn

    async def authorize(self, fn: FunctionDef, identity: Identity | None) -> None:
        if fn.public:
            return
        if identity is None:
            raise errors.Unauthenticated(f"{fn.name} requires authentication")
        allowed = await call_first(
            self.plugins, "authorize", identity=identity, function=fn, runtime=self
        )
        if allowed is False:
            raise errors.Forbidden(f"Not allowed to call {fn.name}")

    def decode_args(self, fn: FunctionDef, body: bytes | Mapping[str, Any]) -> dict[str, Any]:
        if fn.decoder is None:
            if isinstance(body, (bytes, bytearray, memoryview)):
                try:
                    value = msgspec.json.decode(body) if body else {}
                except msgspec.DecodeError as exc:
                    raise errors.InvalidJSON(str(exc)) from None
            else:
                value = dict(body)
            if not isinstance(value, dict):
                raise errors.InvalidArgs(
                    "Arguments must be a JSON object",
                    [{"path": "$", "message": "Expected `object`"}],
                )
            return value
        assert fn.args_type is not None
        if isinstance(body, (bytes, bytearray, memoryview)):
            obj = schema_mod.decode_args(fn.decoder, bytes(body) or b"{}")
        else:
            obj = schema_mod.convert_args(fn.args_type, body)
        return fn.to_kwargs(obj)

    async def call(
        self,
        fn: FunctionDef,
        kwargs: dict[str, Any],
        identity: Identity | None,
        request_id: str,
        client_ip: str | None = None,
        *,
        access: TableAccess | None = None,
    ) -> CallResult:
        """Run one validated call of `fn` in its transaction (queries, mutations) or not.

        `client_ip` is the HTTP caller's address (`ctx.client_ip`), None for calls from code.
        `access` receives the tables the (last) attempt read and wrote; a mutation that wrote
        any sends a `swarm_changes` notice with its COMMIT when subscriptions are on.
        """
        if fn.kind == "action":
            ctx = ActionContext(
                self, fn.name, identity, request_id, datetime.now(UTC), client_ip=client_ip
            )
            return CallResult(await fn.fn(ctx, **kwargs), 1, False)
        read_only = fn.kind == "query"
        key = self._hot_key(fn, identity, kwargs)
        assert self.registry is not None
        tables = self.registry.tables
        touched = access if access is not None else TableAccess(tables)

        async def body(conn: psycopg.AsyncConnection[Any], attempt: int) -> Any:
            touched.reset(tables)
            ctx = TxContext(
                self,
                fn.name,
                identity,
                request_id,
                datetime.now(UTC),
                conn,
                attempt,
                read_only,
                tables=tables,
                client_ip=client_ip,
                access=touched,
            )
            return await fn.fn(ctx, **kwargs)

        changes = touched.changes if not read_only and self.subscriptions is not None else None
        outcome = await self.transactor.run(
            body,
            read_only=read_only,
            function=fn.name,
            key=key,
            timeout_ms=fn.spec.timeout_ms,
            changes=changes,
        )
        return CallResult(outcome.value, outcome.attempts, outcome.waited_on_hot_key)

    @staticmethod
    def _hot_key(fn: FunctionDef, identity: Identity | None, kwargs: dict[str, Any]) -> str:
        if callable(fn.spec.key):
            return str(fn.spec.key(identity, kwargs))
        return "" if fn.key_arg is None else str(kwargs.get(fn.key_arg))

    async def call_as(
        self,
        identity: Identity | None,
        name: str,
        args: Mapping[str, Any],
        request_id: str | None = None,
        *,
        client_ip: str | None = None,
    ) -> Any:
        """Call a public function by name as `identity`, exactly as `POST /fn/<name>` would:
        internal functions are not found, and authentication and permissions are checked.
        For plugin routes that act on behalf of their caller."""
        fn = self.lookup(name, from_http=True)
        await self.authorize(fn, identity)
        kwargs = self.decode_args(fn, args)
        result = await self.call(fn, kwargs, identity, request_id or new_request_id(), client_ip)
        return result.value

    async def call_internal(
        self,
        name: str,
        args: Mapping[str, Any],
        identity: Identity | None,
        request_id: str | None = None,
        expect_kind: str | None = None,
        *,
        client_ip: str | None = None,
    ) -> Any:
        """Call a function by name from code (actions, plugins, the scheduler): internal
        functions are allowed and no authorization runs; arguments are still validated."""
        fn = self.lookup(name, from_http=False)
        if expect_kind is not None and fn.kind != expect_kind:
            raise errors.Internal(f"{name} is a {fn.kind}, not a {expect_kind}")
        kwargs = self.decode_args(fn, args)
        result = await self.call(fn, kwargs, identity, request_id or new_request_id(), client_ip)
        return result.value

    def notify_call_finished(self, info: CallInfo) -> None:
        try:
            self.plugins.hook.call_finished(info=info)
        except Exception:
            log.exception("a call_finished hook failed")

    def notify_webhook_delivered(
        self, provider: str, outcome: str, status: int, duration_s: float
    ) -> None:
        """For webhook routes: runs the `webhook_delivered` hooks, never raising."""
        try:
            self.plugins.hook.webhook_delivered(
                provider=provider, outcome=outcome, status=status, duration_s=duration_s
            )
        except Exception:
            log.exception("a webhook_delivered hook failed")


_REQUEST_PREFIX = uuid.uuid4().hex[:12]
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """Unique per process and across processes: a random prefix chosen at start-up and a
    counter (a uuid4 per call costs more than everything else in this id)."""
    return f"{_REQUEST_PREFIX}{next(_request_counter):08x}"


__all__ = ["CallResult", "HookFailed", "Runtime", "new_request_id"]
