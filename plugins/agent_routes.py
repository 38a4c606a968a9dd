"""Routes agents on VMs call: `POST /agent/claim` and `POST /agent/heartbeat`.

Authenticated like `/fn` (in production an API key, identity kind "api_key"; any identity the
`authenticate` hooks return is accepted, anonymous is 401), authorized with the called
function's permission, and answered in DESIGN §6's shapes. The work is done by the ticket
functions, called by name through the runtime:

- `POST /agent/claim` `{"vm_id"}` -> `200 {"ticket": {...} | null}` (`tickets.claim_next`)
- `POST /agent/heartbeat` `{"ticket_id", "vm_id", "progress"?, "message"?}` ->
  `200 {"success": true, "lease_expires_at", "ticket"?}` (`tickets.heartbeat`, then
  `tickets.update_progress` when `progress` is given)
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime import (
    CallInfo,
    Identity,
    InvalidArgs,
    RuntimeFailure,
    Unauthenticated,
    UserError,
    authenticate,
    error_response,
    hookimpl,
    read_limited_body,
)

log = logging.getLogger("plugins.agent_routes")

VmId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ClaimBody(msgspec.Struct, forbid_unknown_fields=True):
    vm_id: VmId


class HeartbeatBody(msgspec.Struct, forbid_unknown_fields=True):
    ticket_id: uuid.UUID
    vm_id: VmId
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    message: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


_claim_decoder = msgspec.json.Decoder(ClaimBody)
_heartbeat_decoder = msgspec.json.Decoder(HeartbeatBody)
_encoder = msgspec.json.Encoder()

Handler = Callable[[Any, Identity, bytes, str], Awaitable[Any]]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


async def _call(
    runtime: Any, name: str, args: dict[str, Any], identity: Identity, request_id: str
) -> Any:
    """Call a function as `identity`: its permission is checked as over `/fn`."""
    return await runtime.call_as(identity, name, args, request_id)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body or b"{}")
    except msgspec.ValidationError as exc:
        text = str(exc)
        message, sep, path = text.rpartition(" - at `")
        if not sep:
            message, path = text, "$`"
        raise InvalidArgs(
            "The request body does not match the route's schema",
            [{"path": path[:-1], "message": message}],
        ) from None
    except msgspec.DecodeError as exc:
        raise UserError("invalid_json", str(exc)) from None


def _route(path: str, name: str, handler: Handler) -> Route:
    async def endpoint(request: Request) -> Response:
        runtime = request.app.state.runtime
        request_id = request.headers.get("x-request-id") or ""
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        started = time.perf_counter()
        identity: Identity | None = None
        status, code = 200, None
        headers = {"x-request-id": request_id}
        try:
            identity = await authenticate(request, runtime)
            if identity is None:
                raise Unauthenticated(f"{path} requires authentication")
            body = await read_limited_body(request, runtime.settings.max_body_bytes)
            value = await handler(runtime, identity, body, request_id)
            return Response(_encoder.encode(value), 200, headers, media_type="application/json")
        except RuntimeFailure as exc:
            status, code = exc.status, exc.code
            return error_response(exc, request_id)
        except Exception:
            status, code = 500, "internal"
            log.exception("%s failed", path)
            return error_response(RuntimeFailure(), request_id)
        finally:
            runtime.notify_call_finished(
                CallInfo(
                    request_id=request_id,
                    function=name,
                    kind="mutation",
                    status=status,
                    code=code,
                    duration_s=time.perf_counter() - started,
                    attempts=0,
                    tenant_id=identity.tenant_id if identity else None,
                    user_id=identity.user_id if identity else None,
                )
            )

    return Route(path, endpoint, methods=["POST"])


async def claim(runtime: Any, identity: Identity, body: bytes, request_id: str) -> Any:
    args = _decode(_claim_decoder, body)
    ticket = await _call(runtime, "tickets.claim_next", {"vm_id": args.vm_id}, identity, request_id)
    return {"ticket": ticket}


async def heartbeat(runtime: Any, identity: Identity, body: bytes, request_id: str) -> Any:
    args = _decode(_heartbeat_decoder, body)
    ticket_id = str(args.ticket_id)
    result = await _call(
        runtime,
        "tickets.heartbeat",
        {"ticket_id": ticket_id, "vm_id": args.vm_id},
        identity,
        request_id,
    )
    if args.progress is not None:
        progress: dict[str, Any] = {
            "ticket_id": ticket_id,
            "vm_id": args.vm_id,
            "progress": args.progress,
        }
        if args.message is not None:
            progress["message"] = args.message
        ticket = await _call(runtime, "tickets.update_progress", progress, identity, request_id)
        result = {**result, "lease_expires_at": ticket["lease_expires_at"], "ticket": ticket}
    return result


@hookimpl
def routes() -> list[Route]:
    return [
        _route("/agent/claim", "tickets.claim_next", claim),
        _route("/agent/heartbeat", "tickets.heartbeat", heartbeat),
    ]
