"""Human-in-the-loop sessions: a conversation about a ticket, its event log and approvals.

Messages and events are read oldest first, one page at a time (keyset pagination over the
`by_session` index). Events are append-only: there is no function that changes or deletes
one; approvals and state changes append their own events. An approval records who decided
(`decided_by`, the caller's user id) and from where (`decided_ip`, the HTTP client address).
"""

from __future__ import annotations

from typing import Any

from runtime import UserError, mutation, query

from ._tenancy import actor_of, get_owned, page_size, tenant_of


def _author_type(ctx: Any) -> str:
    identity = ctx.auth
    if identity.kind == "system":
        return "system"
    if identity.kind == "api_key" or "agent" in identity.roles:
        return "agent"
    return "human"


async def _append_event(
    ctx: Any, session: dict[str, Any], kind: str, data: dict[str, Any] | None = None
) -> str:
    return await ctx.db.insert(
        "hitl_events",
        {
            "tenant_id": session["tenant_id"],
            "session_id": session["_id"],
            "kind": kind,
            "actor_id": actor_of(ctx),
            "data": data or {},
        },
    )


async def _open_session(ctx: Any, session_id: str) -> dict[str, Any]:
    session = await get_owned(ctx, "hitl_sessions", session_id, "Session")
    if session["state"] == "closed":
        raise UserError("conflict", "The session is closed")
    return session


# -- sessions ----------------------------------------------------------------------------


@mutation(permission="hitl:create")
async def create_session(
    ctx: Any, title: str, ticket_id: str | None = None, project_id: str | None = None
) -> dict[str, Any]:
    tenant = tenant_of(ctx)
    if ticket_id is not None:
        await get_owned(ctx, "tickets", ticket_id, "Ticket")
    if project_id is not None:
        await get_owned(ctx, "projects", project_id, "Project")
    doc = {
        "tenant_id": tenant,
        "title": title,
        "state": "open",
        "created_by": actor_of(ctx),
        "ticket_id": ticket_id,
        "project_id": project_id,
        "updated_at": ctx.now,
    }
    session_id = await ctx.db.insert("hitl_sessions", doc)
    session = await ctx.db.get("hitl_sessions", session_id)
    await _append_event(ctx, session, "session.created", {"title": title})
    return session


@query(permission="hitl:read")
async def get_session(ctx: Any, session_id: str) -> dict[str, Any]:
    return await get_owned(ctx, "hitl_sessions", session_id, "Session")


@query(permission="hitl:read")
async def list_sessions(
    ctx: Any, state: str | None = None, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The tenant's sessions (optionally in one state), oldest first."""
    eq: dict[str, Any] = {"tenant_id": tenant_of(ctx)}
    if state is not None:
        eq["state"] = state
    q = ctx.db.query("hitl_sessions").with_index("by_tenant_state", **eq)
    return await q.paginate(cursor, page_size(limit))


@mutation(permission="hitl:respond")
async def set_session_state(ctx: Any, session_id: str, state: str) -> dict[str, Any]:
    session = await get_owned(ctx, "hitl_sessions", session_id, "Session")
    if session["state"] != state:
        await ctx.db.patch("hitl_sessions", session_id, {"state": state, "updated_at": ctx.now})
        await _append_event(ctx, session, "session.state", {"from": session["state"], "to": state})
        session.update(state=state, updated_at=ctx.now)
    return session


# -- messages ----------------------------------------------------------------------------


@query(permission="hitl:read")
async def get_messages(
    ctx: Any, session_id: str, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The session's messages, oldest first: `{"page", "cursor", "is_done"}`."""
    return await _session_page(ctx, "hitl_messages", session_id, cursor, limit)


@mutation(permission="hitl:create")
async def send_message(
    ctx: Any, session_id: str, content: str, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    session = await _open_session(ctx, session_id)
    message_id = await ctx.db.insert(
        "hitl_messages",
        {
            "tenant_id": session["tenant_id"],
            "session_id": session_id,
            "author_type": _author_type(ctx),
            "author_id": actor_of(ctx),
            "content": content,
            "metadata": metadata or {},
        },
    )
    await ctx.db.patch("hitl_sessions", session_id, {"updated_at": ctx.now})
    return await ctx.db.get("hitl_messages", message_id)


# -- events (append-only) ----------------------------------------------------------------


@mutation(permission="hitl:create")
async def add_event(
    ctx: Any, session_id: str, kind: str, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    session = await get_owned(ctx, "hitl_sessions", session_id, "Session")
    event_id = await _append_event(ctx, session, kind, data)
    return await ctx.db.get("hitl_events", event_id)


@query(permission="hitl:read")
async def get_events(
    ctx: Any, session_id: str, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The session's events, oldest first: `{"page", "cursor", "is_done"}`."""
    return await _session_page(ctx, "hitl_events", session_id, cursor, limit)


async def _session_page(
    ctx: Any, table: str, session_id: str, cursor: str | None, limit: int
) -> dict[str, Any]:
    """One page of a session's rows in `table` (by_session index), the session checked first."""
    await get_owned(ctx, "hitl_sessions", session_id, "Session")
    q = ctx.db.query(table).with_index("by_session", session_id=session_id)
    return await q.paginate(cursor, page_size(limit))


# -- approvals ---------------------------------------------------------------------------


@mutation(permission="hitl:create")
async def request_approval(
    ctx: Any, session_id: str, summary: str, ticket_id: str | None = None
) -> dict[str, Any]:
    """Ask a human to approve or reject; the session waits until someone decides."""
    session = await _open_session(ctx, session_id)
    ticket_id = ticket_id or session.get("ticket_id")
    if ticket_id is not None and ticket_id != session.get("ticket_id"):
        await get_owned(ctx, "tickets", ticket_id, "Ticket")
    approval_id = await ctx.db.insert(
        "hitl_approvals",
        {
            "tenant_id": session["tenant_id"],
            "session_id": session_id,
            "ticket_id": ticket_id,
            "summary": summary,
            "state": "pending",
            "requested_by": actor_of(ctx),
        },
    )
    if session["state"] != "waiting":
        await ctx.db.patch("hitl_sessions", session_id, {"state": "waiting", "updated_at": ctx.now})
    await _append_event(ctx, session, "approval.requested", {"approval_id": approval_id})
    return await ctx.db.get("hitl_approvals", approval_id)


@mutation(permission="hitl:approve")
async def approve(ctx: Any, approval_id: str, reason: str | None = None) -> dict[str, Any]:
    return await _decide(ctx, approval_id, "approved", reason)


@mutation(permission="hitl:approve")
async def reject(ctx: Any, approval_id: str, reason: str | None = None) -> dict[str, Any]:
    return await _decide(ctx, approval_id, "rejected", reason)


async def _decide(ctx: Any, approval_id: str, state: str, reason: str | None) -> dict[str, Any]:
    approval = await get_owned(ctx, "hitl_approvals", approval_id, "Approval")
    if approval["state"] != "pending":
        raise UserError("conflict", f"The approval is already {approval['state']}")
    decision = {
        "state": state,
        "decided_by": actor_of(ctx),
        "decided_ip": ctx.client_ip,
        "decided_at": ctx.now,
        "reason": reason,
    }
    await ctx.db.patch("hitl_approvals", approval_id, decision)
    session = await ctx.db.get("hitl_sessions", approval["session_id"])
    await _append_event(
        ctx,
        session,
        f"approval.{state}",
        {"approval_id": approval_id, "reason": reason, "ip": ctx.client_ip},
    )
    still_pending = await (
        ctx.db.query("hitl_approvals")
        .with_index("by_session", session_id=session["_id"])
        .where("state", "=", "pending")
        .first()
    )
    if session["state"] == "waiting" and still_pending is None:
        await ctx.db.patch(
            "hitl_sessions", session["_id"], {"state": "open", "updated_at": ctx.now}
        )
    approval.update(decision)
    return approval


@query(permission="hitl:read")
async def list_approvals(
    ctx: Any,
    session_id: str | None = None,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """A session's approvals, or the tenant's (e.g. every pending one), oldest first."""
    tenant = tenant_of(ctx)
    approvals = ctx.db.query("hitl_approvals")
    if session_id is not None:
        await get_owned(ctx, "hitl_sessions", session_id, "Session")
        q = approvals.with_index("by_session", session_id=session_id)
        if state is not None:
            q = q.where("state", "=", state)
    else:
        eq = {"tenant_id": tenant} if state is None else {"tenant_id": tenant, "state": state}
        q = approvals.with_index("by_tenant_state", **eq)
    return await q.paginate(cursor, page_size(limit))
