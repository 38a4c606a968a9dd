"""Tickets: the units of work agents claim, lease, report progress on and complete.

States: draft, pending, claimed, in_progress, review, completed, failed, blocked, hold; the
legal moves are `_ticket_ops.TRANSITIONS`. A claim is a 30-minute lease held by one VM,
extended by `heartbeat`/`update_progress`; `expire_leases` (run in the background by
plugins/lease_expiry.py) treats a lapsed lease like a retryable failure. Everything is scoped
to the caller's tenant; another tenant's ticket is `not_found`.
"""

from __future__ import annotations

from typing import Any

from runtime import UserError, internal_mutation, mutation, query

from . import _ticket_ops as ops

# -- queries ---------------------------------------------------------------------------


@query(permission="tickets:read")
async def get_by_id(ctx: Any, ticket_id: str) -> dict[str, Any]:
    """The ticket with its project, parent and children."""
    ticket = await ops.get_ticket(ctx, ticket_id)
    project = parent = None
    if ticket.get("project_id"):
        project = await ctx.db.get("projects", ticket["project_id"])
    if ticket.get("parent_id"):
        parent = await ctx.db.get("tickets", ticket["parent_id"])
    children = await (
        ctx.db.query("tickets")
        .with_index("by_parent", parent_id=ticket["_id"])
        .where("tenant_id", "=", ticket["tenant_id"])
        .take(500)
    )
    return {
        **ticket,
        "project": project if ops.visible(ctx, project) else None,
        "parent": parent if ops.visible(ctx, parent) else None,
        "children": children,
    }


@query(permission="tickets:read")
async def get_by_project(
    ctx: Any, project_id: str, state: str | None = None, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """One page of a project's tickets (optionally in one state), oldest first."""
    project = await ops.get_project(ctx, project_id)
    equal: dict[str, Any] = {"project_id": project["_id"]}
    if state is not None:
        equal["state"] = state
    q = ctx.db.query("tickets").with_index("by_project_state", **equal)
    if state is None:
        q = q.order("asc", "_creation_time")
    return await q.where("tenant_id", "=", project["tenant_id"]).paginate(cursor, limit)  # type: ignore[no-any-return]


@query(permission="tickets:read")
async def get_available(
    ctx: Any, limit: int = 50, project_id: str | None = None
) -> list[dict[str, Any]]:
    """Pending tickets in claim order: highest priority first, then oldest."""
    tenant_sql, params = ops.tenant_filter(ctx)
    project_sql = ""
    if project_id is not None:
        project_sql = " AND project_id = %s"
        params.append(project_id)
    return await ctx.sql(  # type: ignore[no-any-return]
        f"SELECT * FROM tickets WHERE state = 'pending'{tenant_sql}{project_sql}"
        " ORDER BY priority DESC, _creation_time, _id LIMIT %s",
        *params,
        limit,
    )


@query(permission="tickets:read")
async def get_by_vm(ctx: Any, vm_id: str) -> dict[str, Any] | None:
    """The ticket a VM is working on (claimed or in progress), or null."""
    q = (
        ctx.db.query("tickets")
        .with_index("by_vm_state", vm_id=vm_id)
        .where("state", "in", list(ops.ACTIVE))
    )
    tenant = ops.scope(ctx)
    if tenant is not None:
        q = q.where("tenant_id", "=", tenant)
    return await q.order("desc").first()  # type: ignore[no-any-return]


@query(permission="tickets:read")
async def get_by_pr_url(ctx: Any, pr_url: str) -> dict[str, Any] | None:
    """The ticket whose pull request is `pr_url`, or null."""
    q = ctx.db.query("tickets").with_index("by_pr_url", pr_url=pr_url)
    tenant = ops.scope(ctx)
    if tenant is not None:
        q = q.where("tenant_id", "=", tenant)
    return await q.order("desc").first()  # type: ignore[no-any-return]


@query(permission="tickets:read")
async def get_stats(ctx: Any, project_id: str | None = None) -> dict[str, Any]:
    """Ticket counts per state (every state present, zeros included) and the total."""
    tenant_sql, params = ops.tenant_filter(ctx)
    project_sql = ""
    if project_id is not None:
        project_sql = " AND project_id = %s"
        params.append(project_id)
    rows = await ctx.sql(
        f"SELECT state, count(*) AS n FROM tickets WHERE true{tenant_sql}{project_sql}"
        " GROUP BY state",
        *params,
    )
    by_state = dict.fromkeys(ops.STATES, 0)
    for row in rows:
        by_state[row["state"]] = int(row["n"])
    return {"total": sum(by_state.values()), "by_state": by_state}


# -- mutations -------------------------------------------------------------------------


@mutation(permission="tickets:create")
async def create(
    ctx: Any,
    title: str,
    description: str | None = None,
    project_id: str | None = None,
    parent_id: str | None = None,
    priority: int = 0,
    depends_on: list[str] | None = None,
) -> dict[str, Any]:
    """A new ticket in state draft. Dependencies must be tickets of the same tenant; a
    ticket moved to pending while one of them is unfinished becomes blocked."""
    tenant = ops.require_tenant(ctx)
    if project_id is not None:
        project = await ops.get_project(ctx, project_id)
        if project["state"] == "archived":
            raise UserError("conflict", "Cannot add tickets to an archived project")
    if parent_id is not None:
        await ops.get_ticket(ctx, parent_id)
    deps = list(dict.fromkeys(depends_on or []))
    if deps:
        rows = await ctx.sql(
            "SELECT _id FROM tickets WHERE _id = ANY(%s::uuid[]) AND tenant_id = %s", deps, tenant
        )
        missing = sorted(set(deps) - {r["_id"] for r in rows})
        if missing:
            raise UserError(
                "not_found", f"Dependency ticket not found: {missing[0]}", {"missing": missing}
            )
    doc = {
        "tenant_id": tenant,
        "title": title,
        "description": description,
        "project_id": project_id,
        "parent_id": parent_id,
        "priority": priority,
        "depends_on": deps,
        "state": "draft",
        "rejection_count": 0,
        "created_by": ops.caller_id(ctx),
        "updated_at": ctx.now,
    }
    ticket_id = await ctx.db.insert("tickets", doc)
    return await ctx.db.get("tickets", ticket_id)  # type: ignore[no-any-return]


@mutation(permission="tickets:update")
async def set_state(
    ctx: Any, ticket_id: str, state: str, note: str | None = None, pr_url: str | None = None
) -> dict[str, Any]:
    """Move a ticket along a legal transition (409 naming from and to otherwise).

    pending becomes blocked while a dependency is unfinished; leaving a leased state for
    pending, blocked, draft or hold clears the assignment; review ends the lease (a human
    has the ticket now); completed runs the completion logic (dependents are unblocked).
    Claims go through `claim`/`claim_next`. `pr_url` records the ticket's pull request (e.g.
    when handing it to review); GitHub's merge of that PR then completes the ticket.
    """
    ticket = await ops.get_ticket(ctx, ticket_id)
    noted: dict[str, Any] = {}
    if note is not None:
        noted["last_error" if state == "failed" else "review_note"] = note
    if pr_url is not None:
        noted["pr_url"] = pr_url
    if ticket["state"] == state:  # nothing to move; record the note and PR, if any
        return await ops.update(ctx, ticket, noted) if noted else ticket
    ops.check_transition(ticket, state)
    if state == "claimed":
        raise UserError("bad_request", "Use tickets.claim to claim a ticket")
    if state == "completed":
        ticket, _ = await ops.complete_ticket(ctx, ticket, pr_url=pr_url)
        return ticket
    fields: dict[str, Any] = {"state": state, **noted}
    if state == "review":
        fields["lease_expires_at"] = None
    if state == "in_progress":  # back from review: the VM holds a fresh lease
        fields.update(ops.lease_fields(ctx))
    if state == "pending":
        fields["state"] = await ops.pending_or_blocked(ctx, ticket)
    if state in ("pending", "blocked", "draft", "hold"):
        fields.update(ops.UNASSIGNED)
    return await ops.update(ctx, ticket, fields)


@mutation(permission="tickets:claim")
async def claim(
    ctx: Any, ticket_id: str, vm_id: str, assignee_type: str = "agent"
) -> dict[str, Any]:
    """Lease a pending ticket to `vm_id` for 30 minutes (409 in any other state)."""
    ticket = await ops.get_ticket(ctx, ticket_id)
    ticket = await ops.claim_ticket(ctx, ticket, vm_id, assignee_type)
    return {"success": True, "lease_expires_at": ticket["lease_expires_at"], "ticket": ticket}


def _claim_queue(auth: Any, args: dict[str, Any]) -> str:
    """The hot key of claim_next: one queue per tenant (and project, when given)."""
    return f"{auth.tenant_id if auth else ''}/{args.get('project_id') or ''}"


@mutation(permission="tickets:claim", key=_claim_queue)
async def claim_next(
    ctx: Any, vm_id: str, assignee_type: str = "agent", project_id: str | None = None
) -> dict[str, Any] | None:
    """Claim the caller tenant's most urgent pending ticket (priority, then age), or null.

    Concurrent claimers all want "the first pending row". `FOR UPDATE SKIP LOCKED` passes
    over rows other transactions are claiming right now, but under SERIALIZABLE that is not
    enough: a row claimed and committed after this snapshot still raises 40001, and SSI sees
    the claimers' reads of the queue as conflicting. Measured (1,000 claims, 10-32 in flight,
    no HTTP): keyed per VM, 0.8-1.3 retries per claim and some calls exhausting retries;
    keyed on the queue, the first conflict makes the key hot and later claimers wait on its
    advisory lock before BEGIN: 2-6 retries in 1,000, none exhausted, ~450-570 claims/s. So
    the hot key is the queue (the tenant's, or one project's), not the VM.
    """
    tenant = ops.require_tenant(ctx)
    project_sql, params = "", [tenant]
    if project_id is not None:
        project_sql = " AND project_id = %s"
        params.append(project_id)
    rows = await ctx.sql(
        f"SELECT * FROM tickets WHERE tenant_id = %s AND state = 'pending'{project_sql}"
        " ORDER BY priority DESC, _creation_time, _id LIMIT 1 FOR UPDATE SKIP LOCKED",
        *params,
    )
    if not rows:
        return None
    return await ops.claim_ticket(ctx, rows[0], vm_id, assignee_type)


@mutation(permission="tickets:claim")
async def heartbeat(ctx: Any, ticket_id: str, vm_id: str) -> dict[str, Any]:
    """Extend the lease by 30 minutes; only the VM holding it may (403 otherwise)."""
    ticket = await ops.get_ticket(ctx, ticket_id)
    if ticket["state"] not in ops.ACTIVE:
        raise UserError("conflict", f"Cannot heartbeat ticket in state: {ticket['state']}")
    if ticket.get("vm_id") != vm_id:
        raise UserError("forbidden", "The ticket is leased by another VM")
    ticket = await ops.update(ctx, ticket, ops.lease_fields(ctx))
    return {"success": True, "lease_expires_at": ticket["lease_expires_at"]}


@mutation(permission="tickets:claim")
async def update_progress(
    ctx: Any, ticket_id: str, progress: int, message: str | None = None, vm_id: str | None = None
) -> dict[str, Any]:
    """Record progress (0-100) on a leased ticket: it becomes in_progress and the lease is
    extended. With `vm_id`, only the VM holding the lease may."""
    ticket = await ops.get_ticket(ctx, ticket_id)
    if ticket["state"] not in ops.ACTIVE:
        raise UserError("conflict", f"Cannot update progress of ticket in state: {ticket['state']}")
    ops.check_holder(ticket, vm_id)
    fields: dict[str, Any] = {"state": "in_progress", "progress": progress, **ops.lease_fields(ctx)}
    if message is not None:
        fields["progress_message"] = message
    return await ops.update(ctx, ticket, fields)


@mutation(permission="tickets:complete")
async def complete(
    ctx: Any,
    ticket_id: str,
    result: Any = None,
    pr_url: str | None = None,
    outputs: Any = None,
    vm_id: str | None = None,
) -> dict[str, Any]:
    """Complete a claimed, in-progress or in-review ticket; blocked tickets whose
    dependencies are now all completed become pending (their ids in `unblocked`)."""
    ticket = await ops.get_ticket(ctx, ticket_id)
    if ticket["state"] not in ops.FINISHABLE:
        raise UserError("conflict", f"Cannot complete ticket in state: {ticket['state']}")
    ops.check_holder(ticket, vm_id)
    ticket, unblocked = await ops.complete_ticket(
        ctx, ticket, result=result, pr_url=pr_url, outputs=outputs
    )
    return {"ticket": ticket, "unblocked": unblocked}


@mutation(permission="tickets:complete")
async def fail(
    ctx: Any, ticket_id: str, error: str, retryable: bool = True, vm_id: str | None = None
) -> dict[str, Any]:
    """Report a failure: a retryable one with fewer than 3 rejections goes back to pending
    (assignment cleared, `rejection_count` + 1); otherwise the ticket is failed for good."""
    ticket = await ops.get_ticket(ctx, ticket_id)
    if ticket["state"] not in ops.FINISHABLE:
        raise UserError("conflict", f"Cannot fail ticket in state: {ticket['state']}")
    ops.check_holder(ticket, vm_id)
    ticket = await ops.fail_ticket(ctx, ticket, error=error, retryable=retryable)
    return {"ticket": ticket, "final": ticket["state"] == "failed"}


@internal_mutation
async def expire_leases(ctx: Any, limit: int = 500) -> dict[str, Any]:
    """Claimed or in-progress tickets whose lease has passed are failed as retryable
    ("Lease expired"): back to pending, or failed after the third rejection. Rows another
    transaction is updating (a heartbeat racing the sweep) are skipped until the next run."""
    tenant_sql, params = ops.tenant_filter(ctx)
    rows = await ctx.sql(
        "SELECT * FROM tickets WHERE state IN ('claimed', 'in_progress')"
        f" AND lease_expires_at < %s{tenant_sql}"
        " ORDER BY lease_expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
        ctx.now,
        *params,
        limit,
    )
    requeued: list[str] = []
    failed: list[str] = []
    for row in rows:
        ticket = await ops.fail_ticket(ctx, row, error="Lease expired", retryable=True)
        (failed if ticket["state"] == "failed" else requeued).append(ticket["_id"])
    return {"expired": len(rows), "requeued": requeued, "failed": failed}
