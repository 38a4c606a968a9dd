"""Signing bearer JWTs (HS256) for ops, tests and the dev console: `swarm-runtime token`.

Verification lives in plugins/auth_jwt.py; both read the same variables, so a token this
module signs passes that plugin's checks:

    RUNTIME_JWT_SECRET     HMAC secret, at least 32 bytes (RFC 7518 §3.2)
    RUNTIME_JWT_ISSUER     `iss` to put in (and require), if set
    RUNTIME_JWT_AUDIENCE   `aud` to put in (and require), if set; the first of a comma list
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import jwt

MIN_SECRET_BYTES = 32
_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenConfigError(Exception):
    """JWT signing is not configured."""


def parse_duration(text: str) -> int:
    """Seconds in `"90"`, `"90s"`, `"15m"`, `"1h"` or `"7d"`; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: use e.g. 900, 15m, 1h or 7d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def jwt_secret_from_env() -> bytes:
    secret = os.environ.get("RUNTIME_JWT_SECRET", "")
    if not secret:
        raise TokenConfigError(
            "RUNTIME_JWT_SECRET is not set: set it to a random string of at least "
            f"{MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), the same the server uses"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise TokenConfigError(
            f"RUNTIME_JWT_SECRET is {len(secret.encode())} bytes; HS256 needs at least "
            f"{MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
        )
    return secret.encode()


def sign_token(
    secret: bytes,
    *,
    user_id: str,
    tenant_id: str | None,
    roles: list[str],
    ttl_s: int,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """An HS256 JWT with `sub`, `tenant_id`, `roles`, `iat`, `nbf`, `exp` (and iss/aud if set)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "roles": list(roles),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
    }
    if tenant_id is not None:
        claims["tenant_id"] = tenant_id
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm="HS256")


def sign_token_from_env(
    *, user_id: str, tenant_id: str | None, roles: list[str], ttl_s: int
) -> str:
    """`sign_token` with the secret, issuer and audience of the environment."""
    audience = os.environ.get("RUNTIME_JWT_AUDIENCE", "").split(",")[0].strip() or None
    return sign_token(
        jwt_secret_from_env(),
        user_id=user_id,
        tenant_id=tenant_id,
        roles=roles,
        ttl_s=ttl_s,
        issuer=os.environ.get("RUNTIME_JWT_ISSUER") or None,
        audience=audience,
    )
