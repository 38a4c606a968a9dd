"""Every hook a Swarm Runtime plugin can implement.

Plugins are ordinary pluggy plugins: a module in `plugins/` or a package registered under
the `swarm_runtime` entry-point group, with functions decorated `@hookimpl`. Each hook below
says when it runs, what to return, and whether the first non-None answer wins. The README's
"Hook reference" documents each of them (a test checks that none is missing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.routing import BaseRoute

    from runtime.registry import FunctionDef
    from runtime.types import CallInfo, Identity, VMDriver

PROJECT = "swarm_runtime"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------------
# Identity and access
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
async def authenticate(request: Request, runtime: Any) -> Identity | None:
    """Find out who is calling, from the request's headers.

    Called once per HTTP request to a function or a plugin route that asks for it, before the
    arguments are validated, and for a `GET /ws` WebSocket on its handshake and on each
    `authenticate` message (whose token arrives as `Authorization: Bearer <token>`); read only
    `request.headers`, which every one of them has. Return an `Identity` for a valid
    credential, raise `Unauthenticated` with a message for a credential that is present but
    invalid (bad signature, expired, revoked), and return None when the request carries no
    credential this plugin understands. Stops at the first non-None result. `runtime` is the
    `Runtime` (settings, pool, registry) so a plugin can look keys up in the database.
    """


@hookspec(firstresult=True)
async def authorize(identity: Identity, function: FunctionDef, runtime: Any) -> bool | None:
    """Decide whether `identity` may call `function`.

    Called for every call of a function that is not `public=True`, after `authenticate`.
    Return True to allow, False to refuse (the call answers 403 `forbidden`), None to leave
    the decision to the next plugin. Stops at the first non-None result; the built-in rule
    (runtime/defaults/permissions.py) answers last. Raise `Forbidden` to refuse with a
    specific message, for example naming the missing permission.
    """


@hookspec(firstresult=True)
async def resolve_permissions(identity: Identity, runtime: Any) -> frozenset[str] | None:
    """Fill in `identity.permissions` (what `ctx.auth.permissions` shows app code).

    Called after `authenticate` returned an identity whose `permissions` is None. Return the
    set of permission names it holds, or None to leave it unknown. Stops at the first
    non-None result. Runs on every authenticated call: answer from a cache.
    """


# ---------------------------------------------------------------------------------------
# Webhooks
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def verify_webhook(provider: str, headers: dict[str, str], body: bytes) -> bool | None:
    """Check a webhook delivery's signature over the raw body bytes, before any parsing.

    `provider` names the sender (e.g. "github"); `headers` are lower-cased. Return True for a
    valid signature, False for a missing or wrong one, None when this plugin does not handle
    `provider`. Stops at the first non-None result. Compare in constant time.
    """


# ---------------------------------------------------------------------------------------
# Extending the server
# ---------------------------------------------------------------------------------------


@hookspec
def routes() -> list[BaseRoute]:  # type: ignore[empty-body]
    """Return Starlette routes to mount beside `/fn` (e.g. `POST /webhooks/github`).

    Called once when the app is built. Every plugin's routes are mounted; a path served by
    two plugins is a start-up error. Route handlers reach the runtime as
    `request.app.state.runtime` and call functions by name through it.
    """


@hookspec
def vm_drivers() -> dict[str, VMDriver]:  # type: ignore[empty-body]
    """Return VM drivers by name, e.g. `{"process": ProcessDriver()}`.

    Called once at start-up. `RUNTIME_VM_DRIVER` chooses the one `ctx.vm` gives to actions.
    """


@hookspec
async def startup(runtime: Any) -> None:
    """Called once after the pool is open and the schema applied, before serving calls."""


@hookspec
async def shutdown(runtime: Any) -> None:
    """Called once while the server stops: after in-flight calls, before the pool closes."""


# ---------------------------------------------------------------------------------------
# Observing calls
# ---------------------------------------------------------------------------------------


@hookspec
def call_finished(info: CallInfo) -> None:
    """Called after every function call, successful or not, with its outcome and timing.

    For metrics and audit logs. Runs on the request path: keep it fast and never raise.
    `info` holds no argument values.
    """


@hookspec
def reloaded(
    version: int,
    added: list[str],
    changed: list[str],
    removed: list[str],
    duration_s: float,
    error: str | None,
) -> None:
    """Called after every reload attempt of app_functions/schema.json, successful or not.

    `error` is None on success; on failure the previous version keeps serving.
    """


@hookspec
def webhook_delivered(provider: str, outcome: str, status: int, duration_s: float) -> None:
    """Called once per webhook delivery a plugin route received, whatever became of it.

    For metrics and audit. The route's plugin calls it through
    `runtime.notify_webhook_delivered(...)`; the built-in metrics plugin counts deliveries by
    `provider` and `outcome`. `outcome` is one of "processed", "duplicate", "ignored" (the
    handler's answer), "rejected" (missing or wrong signature), "invalid" (any other 4xx)
    or "error" (5xx); `status` is the HTTP status answered. Runs on the request path: keep
    it fast and never raise.
    """
