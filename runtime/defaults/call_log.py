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

from runtime.hookspecs import hookimpl
from runtime.types import CallInfo

log = logging.getLogger("runtime.calls")
webhook_log = logging.getLogger("runtime.webhooks")


@hookimpl
def call_finished(info: CallInfo) -> None:
    level = logging.WARNING if info.status >= 500 else logging.INFO
    if not log.isEnabledFor(level):
        return
    duration_ms = round(info.duration_s * 1000, 2)
    outcome = str(info.status) if info.code is None else f"{info.status} {info.code}"
    log.log(
        level,
        "%s %s %.1f ms attempts=%d tenant=%s request=%s",
        info.function,
        outcome,
        duration_ms,
        info.attempts,
        info.tenant_id or "-",
        info.request_id,
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
