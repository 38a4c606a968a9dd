"""Swarm Runtime: a self-hosted, Convex-style function runtime on PostgreSQL.

This module is the public face that `app_functions/` and `plugins/` import; nothing else in
`runtime` is theirs to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime import vmfiles
from runtime.auth.apikeys import API_KEY_PREFIX, parse_api_key, verify_api_key_secret
from runtime.auth.tokens import TokenConfigError, sign_token_from_env
from runtime.errors import (
    Conflict,
    Forbidden,
    InvalidArgs,
    NotFound,
    RuntimeFailure,
    Unauthenticated,
    Unavailable,
    UserError,
)
from runtime.functions import (
    action,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)
from runtime.hookspecs import hookimpl
from runtime.http.body import read_limited_body
from runtime.http.responses import error_response
from runtime.processes import (
    group_alive,
    spawn_group,
    start_time,
    terminate_group,
    terminate_sibling_group,
)
from runtime.types import SYSTEM, CallInfo, Identity, VMDriver, VMInfo, VMSpec

if TYPE_CHECKING:
    from starlette.requests import Request

__version__ = "0.1.0"


async def authenticate(request: Request, runtime: Any) -> Identity | None:
    """Who sent `request`, as the `authenticate` hooks say (None: anonymous); for plugin
    routes, which then authorize and call functions through `runtime` (the app's Runtime)."""
    from runtime.http.functions import authenticate as authenticate_request  # the engine, lazily

    return await authenticate_request(request, runtime)


__all__ = [
    "API_KEY_PREFIX",
    "SYSTEM",
    "CallInfo",
    "Conflict",
    "Forbidden",
    "Identity",
    "InvalidArgs",
    "NotFound",
    "RuntimeFailure",
    "TokenConfigError",
    "Unauthenticated",
    "Unavailable",
    "UserError",
    "VMDriver",
    "VMInfo",
    "VMSpec",
    "__version__",
    "action",
    "authenticate",
    "error_response",
    "group_alive",
    "hookimpl",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "parse_api_key",
    "query",
    "read_limited_body",
    "sign_token_from_env",
    "spawn_group",
    "start_time",
    "terminate_group",
    "terminate_sibling_group",
    "verify_api_key_secret",
    "vmfiles",
]
