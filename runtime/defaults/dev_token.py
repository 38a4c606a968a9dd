"""`swarm-runtime dev` prints an admin bearer token; this plugin accepts it.

The token is random per data directory (`$RUNTIME_DATA/dev-token`, mode 0600) and the plugin
is only registered in dev mode, so production never accepts it.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Any

from starlette.requests import Request

from runtime.hookspecs import hookimpl
from runtime.types import Identity

DEV_TENANT = "dev"


def dev_token_path(data_dir: Path) -> Path:
    return data_dir / "dev-token"


def ensure_dev_token(data_dir: Path) -> str:
    """Read the dev token, creating it on first use."""
    path = dev_token_path(data_dir)
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = "dev_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def dev_identity() -> Identity:
    return Identity(user_id="dev-admin", tenant_id=DEV_TENANT, roles=("admin",), kind="dev")


@hookimpl(trylast=True)
async def authenticate(request: Request, runtime: Any) -> Identity | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer dev_"):
        return None
    expected = ensure_dev_token(runtime.settings.data_dir)
    if hmac.compare_digest(header[7:].encode(), expected.encode()):
        return dev_identity()
    return None
