"""Secrets of a tenant, encrypted at rest with AES-256-GCM (see `_crypto`).

`set` stores a value, `get` returns it, `list` returns names and metadata (never values),
`delete` removes one, `reencrypt` moves the tenant's secrets to the current key after a
rotation. Values never go into logs or error messages; the table holds only ciphertext.
"""

from __future__ import annotations

from typing import Any

from runtime import UserError, mutation, query

from ._crypto import Sealed, current_key_id, seal, unseal
from ._tenancy import tenant_of


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "key_id": row["key_id"],
        "updated_at": row.get("updated_at"),
        "created_at": row["_creation_time"],
    }


async def _find(ctx: Any, tenant: str, name: str) -> dict[str, Any] | None:
    q = ctx.db.query("secrets").with_index("by_tenant_name", tenant_id=tenant, name=name)
    return await q.first()


@mutation(permission="secrets:write")
async def set(ctx: Any, name: str, value: str) -> dict[str, Any]:
    """Create or replace the secret `name`; answers its metadata, not the value."""
    tenant = tenant_of(ctx)
    sealed = seal(tenant, name, value)
    fields = {
        "ciphertext": sealed.ciphertext,
        "nonce": sealed.nonce,
        "key_id": sealed.key_id,
        "updated_at": ctx.now,
    }
    row = await _find(ctx, tenant, name)
    if row is None:
        await ctx.db.insert("secrets", {"tenant_id": tenant, "name": name, **fields})
        row = await _find(ctx, tenant, name)
    else:
        await ctx.db.patch("secrets", row["_id"], fields)
        row.update(fields)
    return _meta(row)


@query(permission="secrets:read")
async def get(ctx: Any, name: str) -> dict[str, Any]:
    tenant = tenant_of(ctx)
    row = await _find(ctx, tenant, name)
    if row is None:
        raise UserError("not_found", f"Secret {name!r} not found")
    value = unseal(tenant, name, Sealed(row["ciphertext"], row["nonce"], row["key_id"]))
    return {**_meta(row), "value": value}


@query(permission="secrets:read")
async def list(ctx: Any) -> list[dict[str, Any]]:
    """The tenant's secrets by name: metadata only, never values."""
    q = ctx.db.query("secrets").with_index("by_tenant_name", tenant_id=tenant_of(ctx))
    return [_meta(row) for row in await q.collect()]


@mutation(permission="secrets:write")
async def delete(ctx: Any, name: str) -> dict[str, Any]:
    row = await _find(ctx, tenant_of(ctx), name)
    if row is None:
        raise UserError("not_found", f"Secret {name!r} not found")
    await ctx.db.delete("secrets", row["_id"])
    return {"name": name, "deleted": True}


@mutation(permission="secrets:write")
async def reencrypt(ctx: Any) -> dict[str, Any]:
    """Re-encrypt the tenant's secrets still under an older key with the current one."""
    tenant = tenant_of(ctx)
    current = current_key_id()
    q = ctx.db.query("secrets").with_index("by_tenant_name", tenant_id=tenant)
    stale = await q.where("key_id", "!=", current).collect()
    for row in stale:
        value = unseal(tenant, row["name"], Sealed(row["ciphertext"], row["nonce"], row["key_id"]))
        sealed = seal(tenant, row["name"], value)
        await ctx.db.patch(
            "secrets",
            row["_id"],
            {"ciphertext": sealed.ciphertext, "nonce": sealed.nonce, "key_id": sealed.key_id},
        )
    return {"reencrypted": len(stale), "key_id": current}
