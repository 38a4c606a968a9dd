"""Users of a tenant: created with an argon2id password hash, listed and managed by admins.

`users.create` is internal (the `swarm-runtime user create` CLI and other code call it with
any tenant); `users.add` is the same for a tenant admin over HTTP, in the admin's own tenant.
Both hash the password in an action, outside the transaction, then run `users.insert`.
Emails are unique across tenants (they are the sign-in name).
"""

from __future__ import annotations

from typing import Any

from runtime import UserError, action, internal_action, internal_mutation, mutation, query

from ._accounts import hash_password, normalize_email, public_user
from ._tenancy import actor_of, get_owned, page_size, tenant_of


@internal_action
async def create(
    ctx: Any, email: str, password: str, role: str, tenant_id: str, name: str | None = None
) -> dict[str, Any]:
    return await _hash_and_insert(ctx, email, password, role, tenant_id, name)


@action(permission="users:admin")
async def add(
    ctx: Any, email: str, password: str, role: str, name: str | None = None
) -> dict[str, Any]:
    """Create a user in the caller's tenant."""
    return await _hash_and_insert(ctx, email, password, role, tenant_of(ctx), name)


async def _hash_and_insert(
    ctx: Any, email: str, password: str, role: str, tenant_id: str, name: str | None
) -> dict[str, Any]:
    """Hash here, in the action, so the slow argon2id never runs inside a transaction."""
    password_hash = await hash_password(password)
    return await ctx.run_mutation(
        "users.insert",
        {
            "email": email,
            "password_hash": password_hash,
            "role": role,
            "tenant_id": tenant_id,
            "name": name,
        },
    )


@internal_mutation
async def insert(
    ctx: Any, email: str, password_hash: str, role: str, tenant_id: str, name: str | None = None
) -> dict[str, Any]:
    email = normalize_email(email)
    await _check_role(ctx, role)
    if await ctx.db.query("users").with_index("by_email", email=email).first() is not None:
        raise UserError("conflict", "A user with this email already exists")
    doc = {
        "tenant_id": tenant_id,
        "email": email,
        "password_hash": password_hash,
        "role": role,
        "active": True,
    }
    if name is not None:
        doc["name"] = name
    user_id = await ctx.db.insert("users", doc)
    ctx.log.info("user %s created in tenant %s with role %s", user_id, tenant_id, role)
    return public_user(await ctx.db.get("users", user_id))


@query(permission="users:read")
async def list(ctx: Any, cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
    """The tenant's users, oldest first, one page at a time."""
    page = await (
        ctx.db.query("users")
        .with_index("by_tenant", tenant_id=tenant_of(ctx))
        .paginate(cursor, page_size(limit))
    )
    page["page"] = [public_user(row) for row in page["page"]]
    return page


@mutation(permission="users:admin")
async def set_role(ctx: Any, user_id: str, role: str) -> dict[str, Any]:
    user = await get_owned(ctx, "users", user_id, "User")
    await _check_role(ctx, role)
    if user_id == actor_of(ctx) and role != user["role"]:
        raise UserError("conflict", "You cannot change your own role")
    await ctx.db.patch("users", user_id, {"role": role})
    user["role"] = role
    return public_user(user)


@mutation(permission="users:admin")
async def deactivate(ctx: Any, user_id: str) -> dict[str, Any]:
    """Refuse the user's sign-ins; plugins/rbac.py also refuses calls with tokens already issued."""
    user = await get_owned(ctx, "users", user_id, "User")
    if user_id == actor_of(ctx):
        raise UserError("conflict", "You cannot deactivate your own account")
    if user.get("active") is not False:
        await ctx.db.patch("users", user_id, {"active": False})
    user["active"] = False
    return public_user(user)


async def _check_role(ctx: Any, role: str) -> None:
    """Once the roles table is seeded, a role must be one of its rows."""
    roles = ctx.db.query("roles")
    if (
        await roles.count()
        and await ctx.db.query("roles").with_index("by_name", name=role).first() is None
    ):
        raise UserError("invalid_args", f"Unknown role {role!r}")
