"""The default access rule for `permission="x:y"` until an RBAC plugin decides.

An identity whose permissions are known must hold the permission; the dev and system
identities hold every permission. An RBAC plugin (plugins/rbac.py) resolves permissions from
the database and answers first.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import Forbidden
from runtime.hookspecs import hookimpl
from runtime.types import Identity


@hookimpl(trylast=True)
async def authorize(identity: Identity, function: Any, runtime: Any) -> bool | None:
    permission = function.permission
    if permission is None or identity.kind in ("dev", "system"):
        return None
    if identity.permissions is not None and permission in identity.permissions:
        return True
    raise Forbidden(f"Missing permission {permission!r} for {function.name}")
