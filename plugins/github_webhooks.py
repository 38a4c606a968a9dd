"""GitHub webhooks: `POST /webhooks/github`, signed with `X-Hub-Signature-256`.

    GITHUB_WEBHOOK_SECRET   the webhook secret; a comma-separated list accepts each of them,
                            so a secret can be rotated without dropping deliveries (a secret
                            itself cannot contain a comma)

The route, in order: reads the body with the runtime's size limit (413 beyond it); asks the
`verify_webhook` hook whether the signature is good — this plugin answers for "github":
HMAC-SHA256 of the raw body bytes under each secret, compared with `hmac.compare_digest` —
and answers 401 before anything is parsed or run when it is missing or wrong; answers 200 to
`ping`; then calls the internal mutation `github.on_event(event, action, delivery_id,
payload)` as the SYSTEM identity. That one mutation records the delivery in table
`github_deliveries` in the same transaction as its effect, so a redelivery (same
`X-GitHub-Delivery`) has no second effect. Its answer `{"status": ...}` sets the status
code: "processed" and "duplicate" 200, "ignored" (no handler for the event) 202. Every
delivery, whatever became of it, is reported to the `webhook_delivered` hooks (metrics).

Replace the signature check alone by implementing `verify_webhook` in your own plugin (the
first non-None answer wins), or the whole route by dropping a file with another `routes`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runtime import (
    SYSTEM,
    InvalidArgs,
    NotFound,
    RuntimeFailure,
    Unauthenticated,
    UserError,
    error_response,
    hookimpl,
    read_limited_body,
)

log = logging.getLogger("plugins.github_webhooks")

PROVIDER = "github"
HANDLER = "github.on_event"
STATUS_CODES = {"processed": 200, "duplicate": 200, "ignored": 202}


def secrets_from_env() -> list[bytes]:
    raw = os.environ.get("GITHUB_WEBHOOK_SECRET", "")
    return [s.strip().encode() for s in raw.split(",") if s.strip()]


def signature(secret: bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body` under `secret`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@hookimpl
def verify_webhook(provider: str, headers: dict[str, str], body: bytes) -> bool | None:
    if provider != PROVIDER:
        return None
    received = headers.get("x-hub-signature-256", "")
    if not received.startswith("sha256="):
        return False
    valid = False
    for secret in secrets_from_env():  # check every secret: no early exit, constant work
        valid |= hmac.compare_digest(signature(secret, body).encode(), received.encode())
    return valid


def _payload(body: bytes, content_type: str) -> dict[str, Any]:
    if content_type.startswith("application/x-www-form-urlencoded"):
        body = parse_qs(body.decode("utf-8", "replace")).get("payload", [""])[0].encode()
    try:
        payload = json.loads(body)
    except ValueError:
        raise UserError("invalid_json", "The webhook payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidArgs("The webhook payload must be a JSON object")
    return payload


async def receive(request: Request) -> Response:
    runtime = request.app.state.runtime
    started = time.perf_counter()
    response = await _receive(request, runtime)
    runtime.notify_webhook_delivered(
        provider=PROVIDER,
        outcome=_outcome(response),
        status=response.status_code,
        duration_s=time.perf_counter() - started,
    )
    return response


def _outcome(response: Response) -> str:
    """The `webhook_delivered` outcome of an answer (see runtime/hookspecs.py)."""
    if response.status_code == 401:
        return "rejected"
    if response.status_code >= 500:
        return "error"
    if response.status_code >= 400:
        return "invalid"
    status = json.loads(response.body).get("status")
    return "processed" if status == "pong" else str(status)


async def _receive(request: Request, runtime: Any) -> Response:
    try:
        body = await read_limited_body(request, runtime.settings.max_body_bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        verdict = runtime.plugins.hook.verify_webhook(provider=PROVIDER, headers=headers, body=body)
        if verdict is not True:
            if not secrets_from_env():
                log.error("GITHUB_WEBHOOK_SECRET is not set: every GitHub delivery is refused")
            raise Unauthenticated("Missing or invalid X-Hub-Signature-256")
        event = headers.get("x-github-event", "")
        delivery_id = headers.get("x-github-delivery", "")
        if not event or not delivery_id:
            raise InvalidArgs("X-GitHub-Event and X-GitHub-Delivery headers are required")
        if event == "ping":
            return JSONResponse({"status": "pong"})
        payload = _payload(body, headers.get("content-type", ""))
        args: dict[str, Any] = {"event": event, "delivery_id": delivery_id, "payload": payload}
        if isinstance(payload.get("action"), str):
            args["action"] = payload["action"]
        try:
            runtime.lookup(HANDLER, from_http=False)
        except NotFound:
            log.error("no function %s in app_functions: deliveries cannot be handled", HANDLER)
            raise RuntimeFailure(f"{HANDLER} is not defined") from None
        result = await runtime.call_internal(HANDLER, args, SYSTEM)
    except RuntimeFailure as exc:
        if exc.status >= 500:
            log.error("GitHub delivery failed: %s", exc.message, exc_info=exc.__cause__)
        return error_response(exc)
    except Exception:
        log.exception("GitHub delivery failed")
        return error_response(RuntimeFailure())
    status = result.get("status") if isinstance(result, dict) else None
    if status not in STATUS_CODES:
        log.error("%s returned %r, not {'status': processed|ignored|duplicate}", HANDLER, result)
        return error_response(RuntimeFailure(f"{HANDLER} returned no valid status"))
    return JSONResponse(result, status_code=STATUS_CODES[status])


@hookimpl
def routes() -> list[BaseRoute]:
    return [Route("/webhooks/github", receive, methods=["POST"])]


@hookimpl
async def startup(runtime: Any) -> None:
    if not secrets_from_env():
        log.warning("GITHUB_WEBHOOK_SECRET is not set: POST /webhooks/github refuses everything")
