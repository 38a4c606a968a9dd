"""API keys for agents and VMs: `X-API-Key: swk_...` or `Authorization: Bearer swk_...`.

Keys are created with `swarm-runtime apikey create --tenant T --role agent --name vm-7`
(printed once), listed with `apikey list` and revoked with `apikey revoke <key_id>`. Table
`api_keys` stores only a salted HMAC-SHA256 of each secret (runtime/auth/apikeys.py says why
not argon2: the secrets are 256-bit random, so a slow hash would add ~50 ms per call and no
security).

Every call looks its key up by `key_id` (one indexed point query on a pooled connection:
~0.17 ms per call measured, against ~0.1 ms for a JWT) and keeps no cache, so a revoked key
fails on the very next call in every worker, with nothing to invalidate. `last_used_at` is
written in the background, at most once a minute per key, never on the request path.

A valid key becomes `Identity(kind="api_key", key_id=..., tenant_id=..., roles=(role,))`;
plugins/rbac.py turns the role into permissions. A malformed, unknown, wrong or revoked key
answers 401 `unauthenticated` saying which. Any other bearer is not ours: return None.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request

from runtime import (
    API_KEY_PREFIX,
    Identity,
    Unauthenticated,
    Unavailable,
    hookimpl,
    parse_api_key,
    verify_api_key_secret,
)

log = logging.getLogger("plugins.auth_apikey")

LOOKUP = """
SELECT tenant_id, role, name, salt, key_hash, revoked_at FROM api_keys WHERE key_id = %s"""
TOUCH = "UPDATE api_keys SET last_used_at = now() WHERE key_id = %s"
TOUCH_EVERY_S = 60.0

_last_touch: dict[str, float] = {}


def presented_key(request: Request) -> str | None:
    """The key the request carries, or None when it carries no API key."""
    header = request.headers.get("x-api-key")
    if header is not None:
        return header.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value.startswith(API_KEY_PREFIX):
        return value
    return None


async def _lookup(runtime: Any, key_id: str) -> tuple[Any, ...] | None:
    try:
        async with runtime.pool.connection(timeout=runtime.settings.pool_timeout_s) as conn:
            cur = await conn.execute(LOOKUP, (key_id,))
            row: tuple[Any, ...] | None = await cur.fetchone()
            return row
    except PoolTimeout:
        raise Unavailable("No database connection became free to check the API key") from None
    except psycopg.OperationalError:
        raise Unavailable("The database is unavailable to check the API key") from None


async def _touch(runtime: Any, key_id: str) -> None:
    try:
        async with runtime.pool.connection(timeout=runtime.settings.pool_timeout_s) as conn:
            await conn.execute(TOUCH, (key_id,))
    except Exception as exc:  # best effort: never fails a call
        log.debug("could not record last use of API key %s: %s", key_id, exc)


@hookimpl
async def authenticate(request: Request, runtime: Any) -> Identity | None:
    token = presented_key(request)
    if token is None:
        return None
    parsed = parse_api_key(token)
    if parsed is None:
        raise Unauthenticated(f"Malformed API key: expected {API_KEY_PREFIX}<key_id>_<secret>")
    key_id, secret = parsed
    row = await _lookup(runtime, key_id)
    if row is None:
        raise Unauthenticated(f"Unknown API key {key_id}")
    tenant_id, role, name, salt, key_hash, revoked_at = row
    if not verify_api_key_secret(secret, salt, key_hash):
        raise Unauthenticated(f"Invalid API key {key_id}: the secret does not match")
    if revoked_at is not None:
        raise Unauthenticated(f"API key {key_id} was revoked at {revoked_at.isoformat()}")
    now = time.monotonic()
    if now - _last_touch.get(key_id, -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
        _last_touch[key_id] = now
        runtime.spawn(_touch(runtime, key_id))
    return Identity(
        user_id=None,
        tenant_id=tenant_id,
        roles=(role,),
        kind="api_key",
        key_id=key_id,
        claims={"name": name},
    )


@hookimpl
async def startup(runtime: Any) -> None:
    async with runtime.pool.connection(timeout=max(runtime.settings.pool_timeout_s, 10.0)) as conn:
        cur = await conn.execute("SELECT to_regclass('api_keys') IS NOT NULL")
        row = await cur.fetchone()
    if not row or not row[0]:
        raise RuntimeError("plugins/auth_apikey.py needs table api_keys (the Swarm schema.json)")
