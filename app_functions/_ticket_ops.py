"""Ticket rules shared by `tickets.py` and `github.py`: states and their legal transitions,
tenant scoping, leases, and what completing or failing a ticket does to the tickets around it.

Private (the leading underscore keeps the registry from looking for functions here); app
modules import it as `from app_functions import _ticket_ops` or relatively.

Conventions:
- A higher `priority` is more urgent: claim order is priority descending, then oldest first.
- A caller sees only its tenant's rows (`ctx.auth.tenant_id`); a row of another tenant is
  `not_found`, exactly like a missing one. The system identity (no tenant) sees every tenant.
- A ticket whose dependencies (`depends_on`) are not all completed cannot be pending: moving
  it to pending makes it `blocked`, and completing its last unfinished dependency moves it
  back to `pending`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from runtime import UserError

STATES = (
    "draft",
    "pending",
    "claimed",
    "in_progress",
    "review",
    "completed",
    "failed",
    "blocked",
    "hold",
)

# from-state -> the states a ticket may move to. `claimed` is reached only through
# tickets.claim / claim_next (they set the lease), `completed` runs the completion logic.
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"pending", "blocked", "hold"}),
    "pending": frozenset({"claimed", "draft", "blocked", "hold"}),
    "claimed": frozenset(
        {"in_progress", "pending", "review", "completed", "failed", "blocked", "hold"}
    ),
    "in_progress": frozenset({"pending", "review", "completed", "failed", "blocked", "hold"}),
    "review": frozenset({"in_progress", "pending", "completed", "failed", "hold"}),
    # Reopened for a human when its pull request is closed without being merged.
    "completed": frozenset({"review"}),
    "failed": frozenset({"pending", "draft", "hold"}),
    "blocked": frozenset({"pending", "draft", "hold"}),
    "hold": frozenset({"pending", "draft", "blocked"}),
}

ACTIVE = ("claimed", "in_progress")  # states holding a lease
FINISHABLE = ("claimed", "in_progress", "review")  # states complete/fail accept
LEASE = timedelta(minutes=30)
MAX_REJECTIONS = 3  # the third failure is final

UNASSIGNED: dict[str, Any] = {
    "assignee_type": None,
    "assignee_id": None,
    "vm_id": None,
    "lease_expires_at": None,
    "heartbeat_at": None,
}


# -- who may see what ------------------------------------------------------------------


def scope(ctx: Any) -> str | None:
    """The caller's tenant; None only for the system identity (every tenant)."""
    auth = ctx.auth
    if auth is None:
        raise UserError("unauthenticated", "Authentication required")
    if auth.tenant_id is not None:
        return str(auth.tenant_id)
    if auth.kind == "system":
        return None
    raise UserError("forbidden", "The caller belongs to no tenant")


def require_tenant(ctx: Any) -> str:
    """The caller's tenant, for writes that create rows (the system identity has none)."""
    tenant = scope(ctx)
    if tenant is None:
        raise UserError("forbidden", f"{ctx.function} needs a caller with a tenant")
    return tenant


def visible(ctx: Any, row: dict[str, Any] | None) -> bool:
    tenant = scope(ctx)
    return row is not None and (tenant is None or row["tenant_id"] == tenant)


def caller_id(ctx: Any) -> str | None:
    auth = ctx.auth
    return None if auth is None else (auth.user_id or auth.key_id)


def tenant_filter(ctx: Any, column: str = "tenant_id") -> tuple[str, list[Any]]:
    """(` AND tenant_id = %s`, [tenant]) for raw SQL, or nothing for the system identity."""
    tenant = scope(ctx)
    if tenant is None:
        return "", []
    return f" AND {column} = %s", [tenant]


async def get_ticket(ctx: Any, ticket_id: str) -> dict[str, Any]:
    ticket = await ctx.db.get("tickets", ticket_id)
    if not visible(ctx, ticket):
        raise UserError("not_found", "Ticket not found")
    return ticket  # type: ignore[no-any-return]


async def get_project(ctx: Any, project_id: str) -> dict[str, Any]:
    project = await ctx.db.get("projects", project_id)
    if not visible(ctx, project):
        raise UserError("not_found", "Project not found")
    return project  # type: ignore[no-any-return]


# -- state changes ---------------------------------------------------------------------


def check_transition(ticket: dict[str, Any], target: str) -> None:
    current = ticket["state"]
    if target not in TRANSITIONS.get(current, frozenset()):
        raise UserError(
            "conflict",
            f"Cannot move ticket from {current} to {target}",
            {"from": current, "to": target},
        )


def check_holder(ticket: dict[str, Any], vm_id: str | None) -> None:
    """Only the VM holding the lease may act on it (when a VM is named or holds it)."""
    if vm_id is not None and ticket.get("vm_id") not in (None, vm_id):
        raise UserError("forbidden", "The ticket is leased by another VM")


async def update(ctx: Any, ticket: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Patch a ticket (stamping `updated_at`) and return it as it now is."""
    fields = {**fields, "updated_at": ctx.now}
    await ctx.db.patch("tickets", ticket["_id"], fields)
    return {**ticket, **fields}


async def unfinished_dependencies(ctx: Any, depends_on: list[str] | None) -> list[str]:
    """The ids among `depends_on` whose ticket is not completed."""
    if not depends_on:
        return []
    rows = await ctx.sql(
        "SELECT _id FROM tickets WHERE _id = ANY(%s::uuid[]) AND state = 'completed'",
        list(depends_on),
    )
    done = {r["_id"] for r in rows}
    return [d for d in depends_on if d not in done]


async def pending_or_blocked(ctx: Any, ticket: dict[str, Any]) -> str:
    """`pending`, or `blocked` while a dependency is unfinished."""
    return "blocked" if await unfinished_dependencies(ctx, ticket.get("depends_on")) else "pending"


def lease_fields(ctx: Any) -> dict[str, Any]:
    return {"lease_expires_at": ctx.now + LEASE, "heartbeat_at": ctx.now}


async def claim_ticket(
    ctx: Any, ticket: dict[str, Any], vm_id: str, assignee_type: str
) -> dict[str, Any]:
    """Lease a pending ticket to `vm_id` for LEASE."""
    if ticket["state"] != "pending":
        raise UserError("conflict", f"Cannot claim ticket in state: {ticket['state']}")
    return await update(
        ctx,
        ticket,
        {
            "state": "claimed",
            "vm_id": vm_id,
            "assignee_type": assignee_type,
            "assignee_id": caller_id(ctx),
            "progress": 0,
            **lease_fields(ctx),
        },
    )


async def complete_ticket(
    ctx: Any,
    ticket: dict[str, Any],
    *,
    result: Any = None,
    pr_url: str | None = None,
    outputs: Any = None,
) -> tuple[dict[str, Any], list[str]]:
    """Mark completed and move every dependent whose dependencies are now all completed
    from blocked to pending. Returns the ticket and the ids of the unblocked tickets."""
    check_transition(ticket, "completed")
    fields: dict[str, Any] = {
        "state": "completed",
        "completed_at": ctx.now,
        "lease_expires_at": None,
        "progress": 100,
    }
    if result is not None:
        fields["result"] = result
    if pr_url is not None:
        fields["pr_url"] = pr_url
    if outputs is not None:
        fields["outputs"] = outputs
    ticket = await update(ctx, ticket, fields)
    return ticket, await unblock_dependents(ctx, ticket)


async def unblock_dependents(ctx: Any, ticket: dict[str, Any]) -> list[str]:
    """Blocked tickets depending on `ticket` whose every dependency is completed -> pending.

    Found through the GIN index on `depends_on` (`tickets__by_depends_on`), not by scanning
    the blocked tickets.
    """
    # MATERIALIZED: the dependents are found by `depends_on` alone (the GIN index), never by
    # the (tenant, state) index, which would read every blocked ticket of the tenant.
    rows = await ctx.sql(
        """
        WITH dependents AS MATERIALIZED (
          SELECT _id, tenant_id, state, depends_on, _creation_time FROM tickets
          WHERE depends_on @> ARRAY[%s]::uuid[]
        )
        SELECT t._id FROM dependents t
        WHERE t.state = 'blocked'
          AND t.tenant_id = %s
          AND NOT EXISTS (
            SELECT 1 FROM tickets d
            WHERE d._id = ANY(t.depends_on) AND d.state <> 'completed'
          )
        ORDER BY t._creation_time, t._id
        """,
        ticket["_id"],
        ticket["tenant_id"],
    )
    ids = [r["_id"] for r in rows]
    for ticket_id in ids:
        await ctx.db.patch("tickets", ticket_id, {"state": "pending", "updated_at": ctx.now})
    return ids


async def fail_ticket(
    ctx: Any, ticket: dict[str, Any], *, error: str, retryable: bool
) -> dict[str, Any]:
    """Count a rejection: back to pending (assignment cleared) while retryable and fewer than
    MAX_REJECTIONS, otherwise failed for good."""
    rejections = int(ticket.get("rejection_count") or 0) + 1
    fields: dict[str, Any] = {
        **UNASSIGNED,
        "rejection_count": rejections,
        "last_error": error[:5000],
        "progress": None,
        "progress_message": None,
    }
    if retryable and rejections < MAX_REJECTIONS:
        fields["state"] = await pending_or_blocked(ctx, ticket)
    else:
        fields["state"] = "failed"
    return await update(ctx, ticket, fields)
