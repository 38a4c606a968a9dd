"""The bearer token `auth.login` hands out: a JWT signed by the runtime's own signer
(`runtime.sign_token_from_env`: HS256 with `RUNTIME_JWT_SECRET`, plus `iss`/`aud` when
`RUNTIME_JWT_ISSUER`/`RUNTIME_JWT_AUDIENCE` are set), so plugins/auth_jwt.py accepts it.

Claims: `sub` (user id), `tenant_id`, `roles`, `iat`, `nbf`, `exp` (`RUNTIME_JWT_TTL_S`,
default one hour).
"""

from __future__ import annotations

import os
import time
from typing import Any

from runtime import RuntimeFailure, TokenConfigError, sign_token_from_env

DEFAULT_TTL_S = 3600


def ttl_s() -> int:
    return int(os.environ.get("RUNTIME_JWT_TTL_S") or DEFAULT_TTL_S)


def issue(user: dict[str, Any]) -> tuple[str, int]:
    """(token, expiry as a Unix timestamp) for a user row."""
    ttl = ttl_s()
    expires_at = int(time.time()) + ttl
    try:
        token = sign_token_from_env(
            user_id=str(user["_id"]), tenant_id=user["tenant_id"], roles=[user["role"]], ttl_s=ttl
        )
    except TokenConfigError as exc:
        raise RuntimeFailure(f"Sign-in cannot issue tokens: {exc}") from None
    return token, expires_at
