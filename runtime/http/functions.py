"""`POST /fn/<name>` and `GET /fn`: calling functions over HTTP."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from runtime.engine import Runtime, new_request_id
from runtime.errors import RuntimeFailure, Unauthenticated
from runtime.http.body import read_limited_body
from runtime.http.responses import error_response, internal_error, json_response, valid_request_id
from runtime.plugins import HookFailed, call_first
from runtime.types import CallInfo, Identity

log = logging.getLogger("runtime.http")


async def authenticate(request: HTTPConnection, runtime: Runtime) -> Identity | None:
    """The caller's identity from the `authenticate` hooks, with its permissions resolved.
    `request` is a Request, or a WebSocket's handshake (the hooks read only its headers)."""
    identity: Identity | None = await call_first(
        runtime.plugins, "authenticate", request=request, runtime=runtime
    )
    if identity is not None and identity.permissions is None:
        permissions = await call_first(
            runtime.plugins, "resolve_permissions", identity=identity, runtime=runtime
        )
        if permissions is not None:
            identity = dataclasses.replace(identity, permissions=frozenset(permissions))
    return identity


async def call_function(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    request_id = valid_request_id(request.headers.get("x-request-id")) or new_request_id()
    started = time.perf_counter()
    name: str = request.path_params["name"]
    identity: Identity | None = None
    attempts = 0
    waited = False
    status = 200
    code: str | None = None
    kind = "?"
    try:
        fn = runtime.lookup(name, from_http=True)
        kind = fn.kind
        identity = await authenticate(request, runtime)
        await runtime.authorize(fn, identity)
        body = await read_limited_body(request, runtime.settings.max_body_bytes)
        kwargs = runtime.decode_args(fn, body)
        client = request.scope.get("client")
        client_ip = client[0] if client else None
        result = await runtime.call(fn, kwargs, identity, request_id, client_ip)
        attempts, waited = result.attempts, result.hot_key_waited
        return json_response(
            {"value": result.value},
            headers={"x-request-id": request_id, "x-runtime-attempts": str(attempts)},
        )
    except RuntimeFailure as exc:
        status, code = exc.status, exc.code
        attempts = getattr(exc, "attempts", attempts)
        if exc.__cause__ is not None and status >= 500:
            log.warning("call %s failed: %s (%s)", name, exc.message, type(exc.__cause__).__name__)
        extra = {"x-runtime-attempts": str(attempts)} if attempts else None
        return error_response(exc, request_id, headers=extra)
    except HookFailed as exc:
        status, code = 500, "internal"
        log.error("call %s: %s", name, exc, exc_info=exc.__cause__)
        return error_response(internal_error(exc, dev=runtime.settings.dev), request_id)
    except Exception as exc:
        status, code = 500, "internal"
        log.exception("call %s raised", name)
        return error_response(internal_error(exc, dev=runtime.settings.dev), request_id)
    finally:
        runtime.notify_call_finished(
            CallInfo(
                request_id=request_id,
                function=name,
                kind=kind,
                status=status,
                code=code,
                duration_s=time.perf_counter() - started,
                attempts=attempts,
                tenant_id=identity.tenant_id if identity else None,
                user_id=identity.user_id if identity else None,
                hot_key_waited=waited,
            )
        )


def describe_functions(runtime: Runtime) -> list[dict[str, Any]]:
    registry = runtime.registry
    if registry is None:
        return []
    return [
        {
            "name": fn.name,
            "kind": fn.kind,
            "public": fn.public,
            "permission": fn.permission,
            "args": fn.args_schema or {"type": "object"},
            "returns": fn.returns_schema,
        }
        for fn in sorted(registry.functions.values(), key=lambda f: f.name)
        if not fn.internal
    ]


async def list_functions(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        if not runtime.settings.dev and await authenticate(request, runtime) is None:
            raise Unauthenticated("Listing functions requires authentication")
    except RuntimeFailure as exc:
        return error_response(exc)
    return json_response({"functions": describe_functions(runtime)})
