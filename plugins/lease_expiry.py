"""Sweep expired ticket leases in the background until a scheduler exists.

Every `RUNTIME_LEASE_SWEEP_S` seconds (default 30; 0 disables) each worker calls the internal
mutation `tickets.expire_leases` as the system identity. Several workers sweeping at once is
safe: the sweep locks the rows it handles with `FOR UPDATE SKIP LOCKED` and runs in a
SERIALIZABLE transaction. A failed sweep is logged and retried at the next tick; the loop
only ends when the runtime stops (it is a `runtime.spawn` task, cancelled on stop).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from runtime import SYSTEM, NotFound, hookimpl

log = logging.getLogger("plugins.lease_expiry")

FUNCTION = "tickets.expire_leases"
DEFAULT_INTERVAL_S = 30.0


def interval_s() -> float:
    try:
        return float(os.environ.get("RUNTIME_LEASE_SWEEP_S") or DEFAULT_INTERVAL_S)
    except ValueError:
        log.warning("RUNTIME_LEASE_SWEEP_S is not a number; using %s s", DEFAULT_INTERVAL_S)
        return DEFAULT_INTERVAL_S


async def sweep_once(runtime: Any) -> dict[str, Any] | None:
    """One sweep; None when `tickets.expire_leases` is not loaded."""
    try:
        result: dict[str, Any] = await runtime.call_internal(FUNCTION, {}, SYSTEM)
    except NotFound:
        return None
    if result.get("expired"):
        log.info(
            "expired %d lease(s): %d requeued, %d failed",
            result["expired"],
            len(result.get("requeued", ())),
            len(result.get("failed", ())),
        )
    return result


async def sweep_forever(runtime: Any, every_s: float) -> None:
    missing_logged = False
    while True:
        await asyncio.sleep(every_s)
        try:
            if await sweep_once(runtime) is None and not missing_logged:
                log.info("%s is not loaded; the lease sweep idles until it is", FUNCTION)
                missing_logged = True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("lease sweep failed; retrying in %s s", every_s)


@hookimpl
async def startup(runtime: Any) -> None:
    every_s = interval_s()
    if every_s > 0:
        runtime.spawn(sweep_forever(runtime, every_s))
