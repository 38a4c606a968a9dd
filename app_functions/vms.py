"""VMs that run agents: registered, heartbeating, listed, and spawned for a ticket.

States: starting -> running <-> busy -> stopping -> stopped, and error from anywhere;
stopped is final. `spawn_for_ticket` starts a VM through the configured driver (`ctx.vm`),
records it, and claims the ticket for it; when anything after the spawn fails (the claim
above all) the VM is stopped again, so no agent runs without a claimed ticket, and its row
says what happened (`stopped`, or `error` if even the stop failed, with `last_error`).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from runtime import (
    NotFound,
    UserError,
    VMSpec,
    action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)

from ._tenancy import get_owned, page_size, tenant_of

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "starting": ("running", "busy", "stopping", "stopped", "error"),
    "running": ("busy", "stopping", "stopped", "error"),
    "busy": ("running", "stopping", "stopped", "error"),
    "stopping": ("stopped", "error"),
    "error": ("stopping", "stopped"),
    "stopped": (),
}
LIVE = ("starting", "running", "busy")


def _check_transition(current: str, new: str) -> None:
    if new != current and new not in TRANSITIONS[current]:
        raise UserError("conflict", f"Cannot move a VM from {current} to {new}")


# -- the registry of VMs -------------------------------------------------------------------


@mutation(permission="vms:write")
async def register(
    ctx: Any,
    name: str,
    driver: str,
    driver_vm_id: str | None = None,
    host: str | None = None,
    ticket_id: str | None = None,
    state: str = "starting",
) -> dict[str, Any]:
    """Record a VM started elsewhere (e.g. by a host agent); it heartbeats from then on."""
    tenant = tenant_of(ctx)
    if ticket_id is not None:
        await get_owned(ctx, "tickets", ticket_id, "Ticket")
    vm_id = await ctx.db.insert(
        "vms",
        {
            "tenant_id": tenant,
            "name": name,
            "driver": driver,
            "driver_vm_id": driver_vm_id,
            "host": host,
            "ticket_id": ticket_id,
            "state": state,
            "updated_at": ctx.now,
        },
    )
    return await ctx.db.get("vms", vm_id)


@mutation(permission="vms:write")
async def heartbeat(
    ctx: Any,
    vm_id: str,
    cpu_percent: float | None = None,
    memory_mb: float | None = None,
    metrics: dict[str, Any] | None = None,
    state: str | None = None,
) -> dict[str, Any]:
    """A live VM reports in: metrics, and optionally running/busy. The first one makes a
    starting VM running."""
    vm = await get_owned(ctx, "vms", vm_id, "VM")
    if vm["state"] not in LIVE:
        raise UserError("conflict", f"The VM is {vm['state']}")
    new_state = state or ("running" if vm["state"] == "starting" else vm["state"])
    _check_transition(vm["state"], new_state)
    fields: dict[str, Any] = {
        "last_heartbeat_at": ctx.now,
        "updated_at": ctx.now,
        "state": new_state,
    }
    if cpu_percent is not None:
        fields["cpu_percent"] = cpu_percent
    if memory_mb is not None:
        fields["memory_mb"] = memory_mb
    if metrics is not None:
        fields["metrics"] = metrics
    await ctx.db.patch("vms", vm_id, fields)
    vm.update(fields)
    return vm


@query(permission="vms:read")
async def list(
    ctx: Any, state: str | None = None, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The tenant's VMs (optionally in one state): `{"page", "cursor", "is_done"}`."""
    eq: dict[str, Any] = {"tenant_id": tenant_of(ctx)}
    if state is not None:
        eq["state"] = state
    q = ctx.db.query("vms").with_index("by_tenant_state", **eq)
    return await q.paginate(cursor, page_size(limit))


@query(permission="vms:read")
async def get(ctx: Any, vm_id: str) -> dict[str, Any]:
    return await get_owned(ctx, "vms", vm_id, "VM")


@mutation(permission="vms:write")
async def set_state(ctx: Any, vm_id: str, state: str) -> dict[str, Any]:
    vm = await get_owned(ctx, "vms", vm_id, "VM")
    _check_transition(vm["state"], state)
    if state != vm["state"]:
        await ctx.db.patch("vms", vm_id, {"state": state, "updated_at": ctx.now})
        vm.update(state=state, updated_at=ctx.now)
    return vm


# -- spawning through the VM driver --------------------------------------------------------


@action(permission="vms:spawn")
async def spawn_for_ticket(ctx: Any, ticket_id: str) -> dict[str, Any]:
    """Start a VM for the ticket and claim the ticket for it; stop it again if that fails."""
    ticket = await ctx.run_query("vms.ticket_for_spawn", {"ticket_id": ticket_id})
    driver = ctx.vm
    name = f"ticket-{ticket_id[:8]}"
    vm_id = await ctx.run_mutation(
        "vms.begin_spawn", {"ticket_id": ticket_id, "name": name, "driver": driver.name}
    )
    env = {
        "RUNTIME_URL": _runtime_url(),
        "TICKET_ID": ticket_id,
        "VM_ID": vm_id,
        "TENANT_ID": ticket["tenant_id"],
    }
    if ticket.get("project_id"):
        env["PROJECT_ID"] = ticket["project_id"]
    try:
        info = await driver.spawn(VMSpec(name=name, env=env, ticket_id=ticket_id))
    except BaseException as exc:
        await asyncio.shield(_record(ctx, vm_id, "error", error=f"spawn failed: {_describe(exc)}"))
        raise
    try:
        await ctx.run_mutation(
            "vms.record",
            {
                "vm_id": vm_id,
                "state": info.state,
                "driver_vm_id": info.vm_id,
                "host": socket.gethostname(),
            },
        )
        claim = await ctx.run_mutation(
            "tickets.claim", {"ticket_id": ticket_id, "vm_id": vm_id, "assignee_type": "agent"}
        )
    except BaseException as exc:
        await asyncio.shield(_undo_spawn(ctx, driver, vm_id, info.vm_id, exc))
        raise
    ctx.log.info("vm %s (%s %s) spawned for ticket %s", vm_id, driver.name, info.vm_id, ticket_id)
    vm = await ctx.run_query("vms.get", {"vm_id": vm_id})
    return {"vm": vm, "claim": claim}


@action(permission="vms:stop")
async def stop(ctx: Any, vm_id: str) -> dict[str, Any]:
    """Stop a VM this runtime's driver started, and record that it stopped."""
    vm = await ctx.run_query("vms.get", {"vm_id": vm_id})
    if vm["state"] == "stopped":
        return vm
    driver = ctx.vm
    if not vm.get("driver_vm_id") or vm["driver"] != driver.name:
        raise UserError("conflict", f"The VM is not managed by the {driver.name!r} driver here")
    await _record(ctx, vm_id, "stopping")
    try:
        info = await driver.stop(vm["driver_vm_id"])
    except NotFound:
        raise UserError(
            "conflict", "The VM driver does not know this VM (it may run on another host)"
        ) from None
    await _record(ctx, vm_id, "stopped" if info.state == "stopped" else "error")
    return await ctx.run_query("vms.get", {"vm_id": vm_id})


async def _undo_spawn(
    ctx: Any, driver: Any, vm_id: str, driver_vm_id: str, cause: BaseException
) -> None:
    """Stop a VM whose ticket could not be claimed; record stopped, or error if stuck."""
    state = "stopped"
    try:
        info = await driver.stop(driver_vm_id)
        if info.state not in ("stopped", "error"):
            state = "error"
    except Exception:
        ctx.log.exception("could not stop vm %s after a failed spawn", vm_id)
        state = "error"
    await _record(
        ctx,
        vm_id,
        state,
        error=f"ticket claim failed: {_describe(cause)}",
        driver_vm_id=driver_vm_id,
    )


async def _record(
    ctx: Any, vm_id: str, state: str, *, error: str | None = None, driver_vm_id: str | None = None
) -> None:
    args: dict[str, Any] = {"vm_id": vm_id, "state": state}
    if error is not None:
        args["last_error"] = error[:2000]
    if driver_vm_id is not None:
        args["driver_vm_id"] = driver_vm_id
    await ctx.run_mutation("vms.record", args)


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or type(exc).__name__
    return f"{code}: {message}" if code else message


def _runtime_url() -> str:
    """Where the agent reaches this runtime: RUNTIME_URL, else RUNTIME_HOST:RUNTIME_PORT."""
    if os.environ.get("RUNTIME_URL"):
        return os.environ["RUNTIME_URL"]
    host = os.environ.get("RUNTIME_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get('RUNTIME_PORT') or 3210}"


@internal_query
async def ticket_for_spawn(ctx: Any, ticket_id: str) -> dict[str, Any]:
    return await get_owned(ctx, "tickets", ticket_id, "Ticket")


@internal_mutation
async def begin_spawn(ctx: Any, ticket_id: str, name: str, driver: str) -> str:
    return await ctx.db.insert(
        "vms",
        {
            "tenant_id": tenant_of(ctx),
            "name": name,
            "driver": driver,
            "ticket_id": ticket_id,
            "state": "starting",
            "updated_at": ctx.now,
        },
    )


@internal_mutation
async def record(
    ctx: Any,
    vm_id: str,
    state: str,
    driver_vm_id: str | None = None,
    host: str | None = None,
    last_error: str | None = None,
) -> None:
    """What the driver reported, without transition checks: the driver is the truth."""
    await get_owned(ctx, "vms", vm_id, "VM")
    fields: dict[str, Any] = {"state": state, "updated_at": ctx.now}
    for column, value in (
        ("driver_vm_id", driver_vm_id),
        ("host", host),
        ("last_error", last_error),
    ):
        if value is not None:
            fields[column] = value
    await ctx.db.patch("vms", vm_id, fields)
