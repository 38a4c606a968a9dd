"""Projects: a tenant's repositories of work that tickets belong to.

States: draft, active, paused, archived (final). Scoped to the caller's tenant; another
tenant's project is `not_found`.
"""

from __future__ import annotations

from typing import Any

from runtime import UserError, mutation, query

from . import _ticket_ops as ops

PROJECT_TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"active", "paused", "archived"}),
    "active": frozenset({"paused", "archived"}),
    "paused": frozenset({"active", "archived"}),
    "archived": frozenset(),
}


@mutation(permission="projects:write")
async def create(
    ctx: Any,
    name: str,
    description: str | None = None,
    repo_url: str | None = None,
    settings: Any = None,
    state: str = "draft",
) -> dict[str, Any]:
    """A new project of the caller's tenant (state draft unless `state` is active)."""
    tenant = ops.require_tenant(ctx)
    project_id = await ctx.db.insert(
        "projects",
        {
            "tenant_id": tenant,
            "name": name,
            "description": description,
            "repo_url": repo_url,
            "settings": settings if settings is not None else {},
            "state": state,
            "created_by": ops.caller_id(ctx),
            "updated_at": ctx.now,
        },
    )
    return await ctx.db.get("projects", project_id)  # type: ignore[no-any-return]


@query(permission="projects:read")
async def get(ctx: Any, project_id: str) -> dict[str, Any]:
    return await ops.get_project(ctx, project_id)


@query(permission="projects:read")
async def list(  # the function's public name is projects.list
    ctx: Any, state: str | None = None, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """One page of the tenant's projects, newest first: `{page, cursor, is_done}`."""
    equal: dict[str, Any] = {}
    tenant = ops.scope(ctx)
    if tenant is not None:
        equal["tenant_id"] = tenant
    if state is not None:
        if tenant is None:
            raise UserError("bad_request", "Filtering by state needs a tenant")
        equal["state"] = state
    q = ctx.db.query("projects")
    if equal:
        q = q.with_index("by_tenant_state", **equal)
    return await q.order("desc", "_creation_time").paginate(cursor, limit)  # type: ignore[no-any-return]


@mutation(permission="projects:write")
async def update(
    ctx: Any,
    project_id: str,
    name: str | None = None,
    description: str | None = None,
    repo_url: str | None = None,
    settings: Any = None,
    state: str | None = None,
) -> dict[str, Any]:
    """Change the given fields; a state change must be legal (409 naming from and to).
    An archived project cannot be changed."""
    project = await ops.get_project(ctx, project_id)
    if project["state"] == "archived":
        raise UserError("conflict", "Cannot update an archived project")
    fields: dict[str, Any] = {
        k: v
        for k, v in {
            "name": name,
            "description": description,
            "repo_url": repo_url,
            "settings": settings,
        }.items()
        if v is not None
    }
    if state is not None and state != project["state"]:
        if state not in PROJECT_TRANSITIONS[project["state"]]:
            raise UserError(
                "conflict",
                f"Cannot move project from {project['state']} to {state}",
                {"from": project["state"], "to": state},
            )
        fields["state"] = state
    fields["updated_at"] = ctx.now
    await ctx.db.patch("projects", project["_id"], fields)
    return {**project, **fields}


@mutation(permission="projects:write")
async def archive(ctx: Any, project_id: str) -> dict[str, Any]:
    """Archive a project (idempotent); its tickets stay readable, no new ones can be added."""
    project = await ops.get_project(ctx, project_id)
    if project["state"] == "archived":
        return project
    fields = {"state": "archived", "updated_at": ctx.now}
    await ctx.db.patch("projects", project["_id"], fields)
    return {**project, **fields}
