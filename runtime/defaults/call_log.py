"""One log line per function call, as a built-in plugin on the `call_finished` hook.

Logger `runtime.calls`, level INFO (WARNING for 5xx). With `RUNTIME_LOG_FORMAT=json` (the
production default) the line is one JSON object whose fields are `request_id`, `function`,
`kind`, `status`, `code` (the error code, null on success), `duration_ms`, `attempts`,
`hot_key_waited` and `tenant_id`; in dev (text format) the message alone reads well:
`tickets.claim 200 3.1 ms attempts=1 tenant=acme request=5f0c...`.

Webhook deliveries (the `webhook_delivered` hook) get one line each on logger
`runtime.webhooks`: `provider`, `outcome`, `status`, `duration_ms`
(`github processed 200 8.4 ms`).

Never logged: argument values, return values, headers or credentials — `CallInfo` carries
none of them. Silence the lines with `logging.getLogger("runtime.calls").setLevel(WARNING)`
in a plugin's `startup` hook.
"""

from __future__ import annotations

import logging
import time

import msgspec

from runtime.hookspecs import hookimpl
from runtime.logs import direct_json_handler, utc_timestamp
from runtime.types import CallInfo

log = logging.getLogger("runtime.calls")
webhook_log = logging.getLogger("runtime.webhooks")


class CallLine(msgspec.Struct):
    """The JSON line of one call, field for field what JSONFormatter writes for it."""

    ts: str
    level: str
    logger: str
    msg: str
    request_id: str
    function: str
    kind: str
    status: int
    code: str | None
    duration_ms: float
    attempts: int
    hot_key_waited: bool
    tenant_id: str | None


_encode_line = msgspec.json.Encoder().encode


@hookimpl
def call_finished(info: CallInfo) -> None:
    level = logging.WARNING if info.status >= 500 else logging.INFO
    if not log.isEnabledFor(level):
        return
    duration_ms = round(info.duration_s * 1000, 2)
    outcome = str(info.status) if info.code is None else f"{info.status} {info.code}"
    message = (
        f"{info.function} {outcome} {duration_ms:.1f} ms attempts={info.attempts} "
        f"tenant={info.tenant_id or '-'} request={info.request_id}"
    )
    handler = direct_json_handler(log) if level == logging.INFO else None
    if handler is not None:
        # One line per call is the hot path: in the production set-up its only reader is the
        # JSON handler, so encode it directly (~2 µs) instead of a LogRecord (~25 µs).
        line = CallLine(
            utc_timestamp(time.time()),
            "info",
            log.name,
            message,
            info.request_id,
            info.function,
            info.kind,
            info.status,
            info.code,
            duration_ms,
            info.attempts,
            info.hot_key_waited,
            info.tenant_id,
        )
        handler.write_line(_encode_line(line).decode())
        return
    log.log(
        level,
        "%s",
        message,
        extra={
            "request_id": info.request_id,
            "function": info.function,
            "kind": info.kind,
            "status": info.status,
            "code": info.code,
            "duration_ms": duration_ms,
            "attempts": info.attempts,
            "hot_key_waited": info.hot_key_waited,
            "tenant_id": info.tenant_id,
        },
    )


@hookimpl
def webhook_delivered(provider: str, outcome: str, status: int, duration_s: float) -> None:
    level = logging.WARNING if status >= 500 else logging.INFO
    if not webhook_log.isEnabledFor(level):
        return
    duration_ms = round(duration_s * 1000, 2)
    webhook_log.log(
        level,
        "%s %s %d %.1f ms",
        provider,
        outcome,
        status,
        duration_ms,
        extra={
            "provider": provider,
            "outcome": outcome,
            "status": status,
            "duration_ms": duration_ms,
        },
    )
