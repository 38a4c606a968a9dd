"""Swarm Runtime: a self-hosted, Convex-style function runtime on PostgreSQL.

This module is the public face that `app_functions/` and `plugins/` import; nothing else in
`runtime` is theirs to import.
"""

from __future__ import annotations

from runtime.auth.apikeys import API_KEY_PREFIX, parse_api_key, verify_api_key_secret
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
from runtime.types import SYSTEM, CallInfo, Identity, VMDriver, VMInfo, VMSpec

__version__ = "0.1.0"

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
    "Unauthenticated",
    "Unavailable",
    "UserError",
    "VMDriver",
    "VMInfo",
    "VMSpec",
    "__version__",
    "action",
    "hookimpl",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "parse_api_key",
    "query",
    "read_limited_body",
    "verify_api_key_secret",
]
