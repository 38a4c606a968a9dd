"""Tenant scoping shared by the platform's functions.

Every Swarm row carries a `tenant_id`; a caller sees and changes only its own tenant's rows,
and a row of another tenant is answered exactly like a row that does not exist (`not_found`),
so ids cannot be probed across tenants.
"""

from __future__ import annotations

from typing import Any

from runtime import UserError

DEFAULT_PAGE = 50
MAX_PAGE = 200


def tenant_of(ctx: Any) -> str:
    """The caller's tenant; an identity without one may not touch tenant data."""
    tenant = ctx.auth.tenant_id if ctx.auth is not None else None
    if not tenant:
        raise UserError("forbidden", "This call needs an identity that belongs to a tenant")
    return str(tenant)


def actor_of(ctx: Any) -> str | None:
    """Who is acting, for `created_by`/`decided_by` columns: the user id, else the API key id."""
    if ctx.auth is None:
        return None
    return ctx.auth.user_id or ctx.auth.key_id


async def get_owned(ctx: Any, table: str, row_id: str, what: str) -> dict[str, Any]:
    """The row `row_id` of `table` if it belongs to the caller's tenant, else `not_found`."""
    tenant = tenant_of(ctx)
    row = await ctx.db.get(table, row_id)
    if row is None or row.get("tenant_id") != tenant:
        raise UserError("not_found", f"{what} not found")
    return dict(row)


def page_size(limit: int | None) -> int:
    return max(1, min(int(limit or DEFAULT_PAGE), MAX_PAGE))
