"""Design sessions: a project's working design (a free-form `spec`) and its review state.

States: draft -> in_review -> approved, and archived from any of them. The spec can change
while a session is a draft or in review; an approved session must go back to draft (or
in_review) first, and an archived one is read-only.
"""

from __future__ import annotations

from typing import Any

from runtime import UserError, mutation, query

from ._tenancy import actor_of, get_owned, page_size, tenant_of

EDITABLE = ("draft", "in_review")


@mutation(permission="design:write")
async def create(
    ctx: Any, project_id: str, title: str, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    tenant = tenant_of(ctx)
    await get_owned(ctx, "projects", project_id, "Project")
    session_id = await ctx.db.insert(
        "design_sessions",
        {
            "tenant_id": tenant,
            "project_id": project_id,
            "title": title,
            "state": "draft",
            "spec": spec or {},
            "created_by": actor_of(ctx),
            "updated_at": ctx.now,
        },
    )
    return await ctx.db.get("design_sessions", session_id)


@query(permission="design:read")
async def get(ctx: Any, session_id: str) -> dict[str, Any]:
    return await get_owned(ctx, "design_sessions", session_id, "Design session")


@mutation(permission="design:write")
async def update(
    ctx: Any,
    session_id: str,
    state: str | None = None,
    spec: dict[str, Any] | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Change the state, the spec and/or the title; only the given fields change."""
    session = await get_owned(ctx, "design_sessions", session_id, "Design session")
    if session["state"] == "archived":
        raise UserError("conflict", "An archived design session cannot change")
    fields: dict[str, Any] = {}
    if spec is not None:
        if session["state"] not in EDITABLE:
            raise UserError(
                "conflict",
                f"Cannot change the spec of a design session in state: {session['state']}",
            )
        fields["spec"] = spec
    if title is not None:
        fields["title"] = title
    if state is not None:
        fields["state"] = state
    if fields:
        fields["updated_at"] = ctx.now
        await ctx.db.patch("design_sessions", session_id, fields)
        session.update(fields)
    return session


@query(permission="design:read")
async def list_by_project(
    ctx: Any,
    project_id: str,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """The project's design sessions (optionally in one state), oldest first."""
    await get_owned(ctx, "projects", project_id, "Project")
    q = ctx.db.query("design_sessions").with_index("by_project", project_id=project_id)
    q = q.where("tenant_id", "=", tenant_of(ctx))
    if state is not None:
        q = q.where("state", "=", state)
    return await q.paginate(cursor, page_size(limit))
